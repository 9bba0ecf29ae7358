"""Fixtures: the scripted tiny Llama (see tiny_llama.py), an hf backend on it, and a LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.models.tiny_llama import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    from harness.models.base import BackendOptions
    from harness.models.hf import load_hf_backend

    return load_hf_backend(str(tiny_model_dir), BackendOptions(dtype="fp32"))


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA adapter saved with peft's save_pretrained on the tiny model (base path recorded)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("adapters") / "checkpoint-1600"
    peft_model.save_pretrained(out)
    return out
