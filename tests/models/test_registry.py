"""Spec strings: one registry, lazy imports, did-you-mean and pip hints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.errors import ModelBackendError
from harness.models import registry
from harness.models.base import BackendOptions, ModelBackend
from harness.models.registry import create_backend, parse_spec


def test_unknown_backend_suggests_the_closest():
    with pytest.raises(ModelBackendError) as exc:
        create_backend("hff:codellama")
    assert str(exc.value) == ("Unknown model backend 'hff'. Did you mean 'hf'? "
                              "Available: embedded, hf, lora, openai, replay")
    with pytest.raises(ModelBackendError, match=r"^Unknown model backend 'zzz'\. Available"):
        create_backend("zzz")


@pytest.mark.parametrize("spec", ["hf", "lora:", "openai", "replay: "])
def test_backends_that_need_an_argument(spec):
    with pytest.raises(ModelBackendError, match=f"needs an argument: {parse_spec(spec)[0]}:"):
        create_backend(spec)


def test_parse_keeps_colons_in_the_argument():
    assert parse_spec("hf:D:\\CodeLlama-13b-hf") == ("hf", "D:\\CodeLlama-13b-hf")
    assert parse_spec("openai:qwen2.5:7b") == ("openai", "qwen2.5:7b")
    assert parse_spec("embedded") == ("embedded", "")


def test_replay_through_the_registry_without_torch(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "a", "output": "SELECT 1;"}) + "\n")
    code = ("import sys; from harness.models import create_backend; "
            f"b = create_backend('replay:{f}'); "
            "print(type(b).__name__, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["ReplayBackend", "False", "False"]


def test_backends_satisfy_the_protocol(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("")
    assert isinstance(create_backend(f"replay:{f}"), ModelBackend)
    assert isinstance(create_backend("openai:qwen-plus", BackendOptions(api_base="http://127.0.0.1:9/v1")),
                      ModelBackend)


def test_missing_dependency_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "hf", ("harness.models.no_such_module_xyz", "f", "pip install torch", True))
    with pytest.raises(ModelBackendError, match="the hf backend needs harness.models.no_such_module_xyz.*pip install torch"):
        create_backend("hf:x")


def test_lazily_imported_bitsandbytes_maps_to_the_quant_extra(monkeypatch):
    def loader(arg, options, spec):
        raise ModuleNotFoundError("No module named 'bitsandbytes'", name="bitsandbytes")

    monkeypatch.setattr(registry.importlib, "import_module", lambda name: type("M", (), {"f": staticmethod(loader)}))
    monkeypatch.setitem(registry.BACKENDS, "hf", ("m", "f", "pip install torch", True))
    with pytest.raises(ModelBackendError, match=r"needs bitsandbytes.*pip install 'txt2sql\[quant\]'"):
        create_backend("hf:x")


def test_hf_and_lora_through_the_registry(tiny_model_dir, adapter_dir):
    hf = create_backend(f"hf:{tiny_model_dir}", BackendOptions(dtype="fp32"))
    lora = create_backend(f"lora:{adapter_dir}", BackendOptions(dtype="fp32"))
    assert hf.spec == f"hf:{tiny_model_dir}" and lora.spec == f"lora:{adapter_dir}"
    assert isinstance(hf, ModelBackend) and isinstance(lora, ModelBackend)


def test_backends_declare_what_the_pipeline_uses(tmp_path):
    from harness.models.base import ModelInfo
    f = tmp_path / "p.jsonl"
    f.write_text("")
    replay = create_backend(f"replay:{f}")
    api = create_backend("openai:qwen-plus", BackendOptions(api_base="http://127.0.0.1:9/v1"))
    assert (replay.cacheable, api.cacheable) == (False, True)
    assert replay.template is None and list(replay.warnings) == []
    assert api.describe() == ModelInfo(name="qwen-plus", backend="openai", fingerprint=api.fingerprint)
    assert replay.describe() == ModelInfo(name=str(f), backend="replay", fingerprint=replay.fingerprint)


def test_hf_and_lora_describe_their_model(tiny_model_dir, adapter_dir):
    hf = create_backend(f"hf:{tiny_model_dir}", BackendOptions(dtype="fp32"))
    lora = create_backend(f"lora:{adapter_dir}", BackendOptions(dtype="fp32"))
    assert hf.describe().name == tiny_model_dir.name and hf.describe().dtype == "float32"
    assert hf.describe().fingerprint == hf.fingerprint
    info = lora.describe()
    assert (info.backend, info.adapter, info.dtype, info.fingerprint) == ("lora", str(adapter_dir), "float32",
                                                                          lora.fingerprint)
    assert info.adapter_base and info.name == adapter_dir.name
