"""harness.finetune on the tiny random-init Llama: trains, saves an adapter lora: loads, records the template."""

from __future__ import annotations

import json

import pytest

from harness.benchmark.model import Question
from harness.finetune import FinetuneConfig, encode_example, finetune_questions
from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.lora import load_lora_backend
from harness.prompts.templates import TEMPLATE_FILE, get_template

QS = [Question(id=str(i), question="hello world", golds=("SELECT a FROM t ;",), context="please answer")
      for i in range(4)]


def test_labels_cover_the_answer_only(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels = encode_example(tok, get_template("seed-zh"), QS[0], 512)
    answer = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
    assert tok.decode(answer) == "SELECT a FROM t ; </s>"
    assert len(ids) == len(labels)


def test_finetune_writes_an_adapter_with_its_template(tmp_path, tiny_model_dir):
    out = tmp_path / "adapter"
    res = finetune_questions(QS, base=str(tiny_model_dir), out=out, template="sqlcoder",
                             config=FinetuneConfig(steps=3, batch_size=2, r=2, alpha=4), dtype="fp32")
    assert res.steps == 3 and res.examples == 4
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    assert json.loads((out / TEMPLATE_FILE).read_text())["name"] == "sqlcoder"
    backend = load_lora_backend(str(out), BackendOptions(dtype="fp32"))
    assert backend.template == get_template("sqlcoder")
    (g,) = backend.generate([Prompt("1", "go_eos")], GenerationConfig(max_new_tokens=5))
    assert g.finish_reason in ("stop", "length", "loop")


def test_empty_split_is_an_error(tmp_path, tiny_model_dir):
    from harness.errors import ModelBackendError

    with pytest.raises(ModelBackendError, match="split is empty"):
        finetune_questions([], base=str(tiny_model_dir), out=tmp_path / "a")


def test_cli_entry_on_the_mini_benchmark(tmp_path, tiny_model_dir, capsys):
    import argparse
    from pathlib import Path

    from harness.finetune import finetune_from_args
    from harness.models.embedded import resolve_model_ref

    mini = Path(__file__).resolve().parents[1] / "data" / "mini"
    args = argparse.Namespace(benchmark=mini, split="dev", base_model=f"hf:{tiny_model_dir}", out=tmp_path / "ad",
                              template=None, steps=2, lr=1e-3, lora_r=2, limit=3)
    assert finetune_from_args(args) == 0
    assert "--model lora:" in capsys.readouterr().out
    assert (tmp_path / "ad" / TEMPLATE_FILE).is_file()
    assert resolve_model_ref("hf:/x") == "/x" and resolve_model_ref("org/model") == "org/model"
