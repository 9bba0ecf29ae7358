"""The lora backend: a real peft adapter on the tiny Llama, and every broken-adapter message."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from harness.errors import ModelBackendError
from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.lora import load_lora_backend
from harness.prompts.templates import TEMPLATE_FILE, get_template

OPTS = BackendOptions(dtype="fp32")


@pytest.fixture()
def adapter(tmp_path, adapter_dir) -> Path:
    """A private copy of the adapter, free to break."""
    return Path(shutil.copytree(adapter_dir, tmp_path / "checkpoint-1600"))


def test_loads_base_from_adapter_config_and_generates(adapter_dir, tiny_backend):
    from peft import PeftModel

    backend = load_lora_backend(str(adapter_dir), OPTS)
    assert isinstance(backend.inner.model, PeftModel)
    assert backend.spec == f"lora:{adapter_dir}"
    (g,) = backend.generate([Prompt("1", "go_sql")], GenerationConfig(max_new_tokens=20))
    assert (g.text, g.finish_reason) == ("SELECT a FROM t ;", "stop")  # LoRA B starts at zero
    assert backend.fingerprint != tiny_backend.fingerprint
    assert backend.template is None


def test_base_model_option_overrides_the_recorded_path(adapter, tiny_model_dir):
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "D:\\CodeLlama-13b-hf"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelBackendError, match=r"names base model 'D:\\CodeLlama-13b-hf', which does not exist.*"
                                                r"--base-model"):
        load_lora_backend(str(adapter), OPTS)
    backend = load_lora_backend(str(adapter), BackendOptions(dtype="fp32", base_model=str(tiny_model_dir)))
    assert backend.base == str(tiny_model_dir)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelBackendError, match="adapter directory .*nope does not exist"):
        load_lora_backend(str(tmp_path / "nope"), OPTS)


def test_full_model_directory_suggests_hf(tiny_model_dir):
    with pytest.raises(ModelBackendError, match=f"no adapter_config.json.*use hf:{tiny_model_dir}"):
        load_lora_backend(str(tiny_model_dir), OPTS)


def test_missing_weights(adapter):
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelBackendError, match="has adapter_config.json but no adapter_model.safetensors or "
                                                "adapter_model.bin: the adapter weights were not saved"):
        load_lora_backend(str(adapter), OPTS)


def test_empty_adapter_file(adapter):
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelBackendError) as exc:
        load_lora_backend(str(adapter), OPTS)
    assert str(exc.value) == ("adapter_model.safetensors in checkpoint-1600 is 0 bytes: the adapter was not "
                              "saved; re-save with save_pretrained")


def test_corrupt_safetensors_header(adapter):
    # What a patched state_dict + save left behind: a length prefix followed by bytes that are not JSON.
    (adapter / "adapter_model.safetensors").write_bytes((40).to_bytes(8, "little") + b"\x00garbage" * 10)
    with pytest.raises(ModelBackendError, match=r"adapter_model.safetensors in checkpoint-1600 has a corrupt "
                                                r"safetensors header \(SafetensorError.*save_pretrained"):
        load_lora_backend(str(adapter), OPTS)


def test_base_with_other_hidden_size_names_both(adapter, tmp_path):
    from tests.models.tiny_llama import save_tiny

    other = save_tiny(tmp_path / "base32", hidden=32)
    with pytest.raises(ModelBackendError) as exc:
        load_lora_backend(str(adapter), BackendOptions(dtype="fp32", base_model=str(other)))
    msg = str(exc.value)
    assert "does not fit base model" in msg and str(other) in msg
    assert "hidden_size=32" in msg and "size mismatch" in msg
    assert "shape [2, 64]" in msg  # the adapter's lora_A: trained on hidden size 64


def test_recorded_template_is_used(adapter):
    get_template("sqlcoder").save(adapter / TEMPLATE_FILE)
    backend = load_lora_backend(str(adapter), OPTS)
    assert backend.template.name == "sqlcoder"
    assert backend.warnings == []


def test_requested_template_differing_from_recorded_warns_loudly(adapter, caplog):
    from harness.models.registry import resolve_template

    get_template("sqlcoder").save(adapter / TEMPLATE_FILE)
    options = BackendOptions(dtype="fp32", template="seed-zh")
    with caplog.at_level(logging.WARNING):
        backend = load_lora_backend(str(adapter), options)
    assert "PROMPT TEMPLATE MISMATCH" in caplog.text
    assert any("trained with template 'sqlcoder'" in w and "'seed-zh' was requested" in w
               for w in backend.warnings)
    assert resolve_template(backend, options).name == "seed-zh"
    assert resolve_template(backend, OPTS).name == "sqlcoder"
