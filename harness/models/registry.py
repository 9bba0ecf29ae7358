"""Spec strings -> backends, through one registry. Heavy dependencies are imported by the factory that
needs them, so ``replay:`` runs without torch.

>>> parse_spec("lora:checkpoint-1600")
('lora', 'checkpoint-1600')
>>> parse_spec("hf:D:\\\\CodeLlama-13b-hf")
('hf', 'D:\\\\CodeLlama-13b-hf')
>>> create_backend("hff:x")
Traceback (most recent call last):
...
harness.errors.ModelBackendError: Unknown model backend 'hff'. Did you mean 'hf'? Available: embedded, hf, lora, openai, replay
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from harness.errors import ModelBackendError
from harness.models.base import BackendOptions, ModelBackend

if TYPE_CHECKING:
    from harness.prompts.templates import PromptTemplate

DEFAULT_SPEC = "embedded:smollm2"

_TORCH_PIP = "pip install 'torch==2.13.0' transformers accelerate safetensors  (see the README)"
BACKENDS: dict[str, tuple[str, str, str, bool]] = {
    # name: (module, function, pip command for a missing dependency, argument required)
    "embedded": ("harness.models.embedded", "load_embedded_backend", _TORCH_PIP, False),
    "hf": ("harness.models.hf", "load_hf_backend", _TORCH_PIP, True),
    "lora": ("harness.models.lora", "load_lora_backend", _TORCH_PIP + " peft", True),
    "openai": ("harness.models.openai_api", "load_openai_backend", "", True),
    "replay": ("harness.models.replay", "load_replay_backend", "", True),
}
_USAGE = {"hf": "hf:PATH_OR_NAME", "lora": "lora:ADAPTER_DIR", "openai": "openai:MODEL", "replay": "replay:FILE"}


def parse_spec(spec: str) -> tuple[str, str]:
    """``name:argument``; the argument may itself hold colons (``hf:D:\\model``, ``openai:qwen:7b``)."""
    name, _, arg = spec.partition(":")
    return name.strip().lower(), arg.strip()


def create_backend(spec: str | None = None, options: BackendOptions | None = None) -> ModelBackend:
    """The backend a spec string names; ``None`` or ``""`` is the embedded default model."""
    options = options or BackendOptions()
    spec = spec or DEFAULT_SPEC
    name, arg = parse_spec(spec)
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ModelBackendError(f"Unknown model backend '{name}'.{hint} Available: {', '.join(sorted(BACKENDS))}")
    module_name, func, pip, needs_arg = BACKENDS[name]
    if needs_arg and not arg:
        raise ModelBackendError(f"model spec '{spec}' needs an argument: {_USAGE[name]}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelBackendError(f"the {name} backend needs {exc.name or exc}, which is not installed: {pip}") from exc
    try:
        return getattr(module, func)(arg, options, spec=spec)
    except ImportError as exc:  # a dependency imported lazily inside the loader
        missing = exc.name or str(exc)
        fix = "pip install 'txt2sql[quant]'" if "bitsandbytes" in missing else (pip or f"pip install {missing}")
        raise ModelBackendError(f"the {name} backend needs {missing}, which is not installed: {fix}") from exc


def resolve_template(backend: ModelBackend, options: BackendOptions) -> PromptTemplate:
    """The template to render prompts with: the one requested, else the one the weights were trained
    with (a txt2sql-trained adapter records it), else the default. A mismatch was already warned about
    by the backend."""
    from harness.prompts.templates import get_template  # prompts import models.base

    if options.template:
        return get_template(options.template)
    return backend.template or get_template(None)
