"""The hf backend on the scripted tiny Llama: batching, left padding, every finish reason, chat prompts."""

from __future__ import annotations

import logging

import pytest

from harness.errors import ModelBackendError
from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.hf import load_hf_backend, resolve_quantize

GREEDY = GenerationConfig(max_new_tokens=40, batch_size=8)


def gen(backend, *texts, config=GREEDY):
    return backend.generate([Prompt(id=str(i), text=t) for i, t in enumerate(texts)], config)


def test_stops_at_end_of_first_statement(tiny_backend):
    (g,) = gen(tiny_backend, "please answer go_sql")
    assert g.text == "SELECT a FROM t ;"
    assert (g.finish_reason, g.tokens_out) == ("stop", 5)
    assert g.tokens_in == 3  # the tiny tokenizer adds no BOS
    assert g.seconds > 0


def test_without_statement_stop_runs_to_eos(tiny_backend):
    cfg = GenerationConfig(max_new_tokens=40, stop_at_statement_end=False)
    (g,) = gen(tiny_backend, "go_sql", config=cfg)
    assert g.text == "SELECT a FROM t ; n1"  # the EOS is counted but not decoded
    assert (g.finish_reason, g.tokens_out) == ("stop", 7)


def test_eos(tiny_backend):
    (g,) = gen(tiny_backend, "go_eos")
    assert (g.text, g.finish_reason, g.tokens_out) == ("e1", "stop", 2)


def test_length(tiny_backend):
    (g,) = gen(tiny_backend, "go_long", config=GenerationConfig(max_new_tokens=4))
    assert (g.text, g.finish_reason, g.tokens_out) == ("q1 q2 q3 q4", "length", 4)


def test_loop_is_cut_early(tiny_backend):
    (g,) = gen(tiny_backend, "go_loop", config=GenerationConfig(max_new_tokens=100))
    assert g.finish_reason == "loop"
    assert 9 <= g.tokens_out <= 12  # three copies of 'l1 l2 l3', checked every 4 tokens
    assert g.text.startswith("l1 l2 l3 l1 l2 l3 l1 l2 l3")


def test_loop_runs_to_length_when_loop_stop_is_off(tiny_backend):
    (g,) = gen(tiny_backend, "go_loop", config=GenerationConfig(max_new_tokens=30, stop_on_loop=False))
    assert (g.finish_reason, g.tokens_out) == ("length", 30)


def test_batch_matches_single_and_keeps_order(tiny_backend):
    # Different prompt lengths: with right padding the short rows would continue from <pad>.
    texts = ["go_eos", "hello world please answer go_sql", "go_loop", "hello go_long", "m0"]
    cfg = GenerationConfig(max_new_tokens=9, batch_size=3)
    batched = gen(tiny_backend, *texts, config=cfg)
    single = [gen(tiny_backend, t, config=GenerationConfig(max_new_tokens=9, batch_size=1))[0] for t in texts]
    assert [g.id for g in batched] == ["0", "1", "2", "3", "4"]
    assert [(g.text, g.finish_reason, g.tokens_out) for g in batched] == \
        [(g.text, g.finish_reason, g.tokens_out) for g in single]
    assert [g.finish_reason for g in batched] == ["stop", "stop", "loop", "length", "stop"]


def test_progress_counts_every_item(tiny_backend):
    done = []
    tiny_backend.generate([Prompt(str(i), "go_eos") for i in range(5)], GenerationConfig(batch_size=2),
                          progress=done.append)
    assert done == [1, 1, 1, 1, 1]  # as each row stops, not per batch


def test_closing_fence_stops_when_prompt_opened_it(tiny_backend):
    (g,) = gen(tiny_backend, "```", "hello ``` m0")[1:]
    assert (g.text, g.finish_reason, g.tokens_out) == ("m1 m2 ```", "stop", 3)
    (g,) = gen(tiny_backend, "hello m0")  # no open fence: the first ``` opens one, EOS ends it
    assert g.tokens_out == 4


def test_pad_token_falls_back_to_eos(tmp_path):
    from tests.models.tiny_llama import save_tiny

    backend = load_hf_backend(str(save_tiny(tmp_path, pad=False)), BackendOptions(dtype="fp32"))
    assert backend.tokenizer.pad_token == "</s>"
    gens = gen(backend, "go_sql", "hello world go_eos")
    assert [g.text for g in gens] == ["SELECT a FROM t ;", "e1"]


def test_chat_prompts_use_the_chat_template(tmp_path):
    from tests.models.tiny_llama import save_tiny

    tmpl = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}go_sql{% endif %}"
    backend = load_hf_backend(str(save_tiny(tmp_path, chat_template=tmpl)), BackendOptions(dtype="fp32"))
    p = Prompt("c", "hello", messages=(("system", "please"), ("user", "hello")))
    (g,) = backend.generate([p], GREEDY)
    assert g.text == "SELECT a FROM t ;"
    assert g.tokens_in == 3  # please hello go_sql, no BOS added twice


def test_chat_prompt_without_chat_template_warns(tiny_model_dir):
    backend = load_hf_backend(str(tiny_model_dir), BackendOptions(dtype="fp32"))
    (g,) = backend.generate([Prompt("c", "go_eos", messages=(("user", "go_eos"),))], GREEDY)
    assert g.text == "e1"
    assert any("no chat template" in w for w in backend.warnings)


def test_fingerprint_depends_on_weights_and_dtype(tmp_path, tiny_model_dir, tiny_backend):
    from tests.models.tiny_llama import save_tiny

    other = load_hf_backend(str(save_tiny(tmp_path, hidden=32)), BackendOptions(dtype="fp32"))
    same = load_hf_backend(str(tiny_model_dir), BackendOptions(dtype="fp32"))
    bf16 = load_hf_backend(str(tiny_model_dir), BackendOptions(dtype="bf16"))
    assert same.fingerprint == tiny_backend.fingerprint
    assert len({tiny_backend.fingerprint, other.fingerprint, bf16.fingerprint}) == 3


def test_missing_local_model_path(tmp_path):
    with pytest.raises(ModelBackendError, match="does not exist"):
        load_hf_backend(str(tmp_path / "nope" / "model"), BackendOptions())


def test_bad_dtype(tiny_model_dir):
    with pytest.raises(ModelBackendError, match="--dtype int3"):
        load_hf_backend(str(tiny_model_dir), BackendOptions(dtype="int3"))


def test_quantize_without_bitsandbytes_names_the_pip_command(tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    with pytest.raises(ModelBackendError, match=r"pip install 'txt2sql\[quant\]'"):
        load_hf_backend(str(tiny_model_dir), BackendOptions(quantize="8bit"))


def test_legacy_load_in_8bit_is_mapped_with_a_warning(caplog):
    warnings: list[str] = []
    with caplog.at_level(logging.WARNING):
        q = resolve_quantize(BackendOptions(extra={"load_in_8bit": "true"}), warnings)
    assert q == "8bit"
    assert "transformers 5" in warnings[0] and "--quantize 8bit" in warnings[0]
    assert "removed" in caplog.text
    assert resolve_quantize(BackendOptions(extra={"load_in_4bit": "false"})) is None
    with pytest.raises(ModelBackendError, match="keep one"):
        resolve_quantize(BackendOptions(quantize="4bit", extra={"load_in_8bit": "1"}))
    with pytest.raises(ModelBackendError, match="8bit or 4bit"):
        resolve_quantize(BackendOptions(quantize="2bit"))
