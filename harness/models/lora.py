"""The ``lora`` backend: a PEFT LoRA adapter on top of an ``hf`` base model (composed, not a branch).

The base comes from ``adapter_config.json``'s ``base_model_name_or_path`` unless ``--base-model`` says
otherwise: adapters trained elsewhere record paths like ``D:\\CodeLlama-13b-hf``. Every way an adapter
directory can be broken gets its own message naming the file and the fix, checked before the (slow)
base model is loaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ModelBackendError
from harness.models.base import ModelBackend, ModelInfo
from harness.models.hf import (
    HFBackend,
    dir_signature,
    fingerprint_of,
    load_model_and_tokenizer,
    model_fingerprint,
    resolve_quantize,
)
from harness.prompts.templates import TEMPLATE_FILE, PromptTemplate, get_template

if TYPE_CHECKING:
    from harness.models.base import BackendOptions, Generation, GenerationConfig, ProgressCallback, Prompt

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub name ``org/model``."""
    return ("\\" in name or re.match(r"^[A-Za-z]:", name) is not None or name.startswith(("/", ".", "~"))
            or name.count("/") > 1)


def check_adapter_dir(adapter_dir: Path) -> tuple[dict[str, Any], Path]:
    """Validate an adapter directory; returns (adapter_config, weights file). Reads no tensors."""
    d = adapter_dir
    if not d.exists():
        raise ModelBackendError(f"adapter directory {d} does not exist")
    if not d.is_dir():
        raise ModelBackendError(f"{d} is a file; lora: expects the adapter directory (the one holding "
                                f"{CONFIG_FILE}), e.g. lora:{d.parent}")
    cfg_path = d / CONFIG_FILE
    if not cfg_path.is_file():
        hint = (f" It holds config.json: it looks like a full model, use hf:{d}" if (d / "config.json").is_file()
                else " Point lora: at the directory save_pretrained wrote (often a checkpoint-N folder).")
        raise ModelBackendError(f"{d} has no {CONFIG_FILE}: not a PEFT adapter directory.{hint}")
    if cfg_path.stat().st_size == 0:
        raise ModelBackendError(f"{CONFIG_FILE} in {d} is 0 bytes: the adapter was not saved; "
                                "re-save with save_pretrained")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelBackendError(f"{cfg_path}: not valid JSON ({exc}); re-save with save_pretrained") from exc
    if not isinstance(config, dict):
        raise ModelBackendError(f"{cfg_path}: expected a JSON object")
    weights = next((d / w for w in WEIGHT_FILES if (d / w).is_file()), None)
    if weights is None:
        raise ModelBackendError(
            f"{d} has {CONFIG_FILE} but no {' or '.join(WEIGHT_FILES)}: the adapter weights were not "
            "saved; re-save with save_pretrained")
    if weights.stat().st_size == 0:
        raise ModelBackendError(f"{weights.name} in {d.name} is 0 bytes: the adapter was not saved; "
                                "re-save with save_pretrained")
    if weights.suffix == ".safetensors":
        check_safetensors(weights)
    return config, weights


def check_safetensors(path: Path) -> list[str]:
    """Open the header; a corrupt one gets an explanation instead of ``InvalidHeaderDeserialization``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelBackendError(
            f"{path.name} in {path.parent.name} has a corrupt safetensors header ({type(exc).__name__}: {exc}). "
            "The file was not written by a plain save_pretrained: typically the training script patched "
            "model.state_dict before saving, or the copy was interrupted. Re-save the adapter with "
            "model.save_pretrained(dir) on the unpatched PeftModel (or train again with harness.finetune)"
        ) from exc
    if not keys:
        raise ModelBackendError(f"{path.name} in {path.parent.name} holds no tensors: the adapter was not "
                                "saved; re-save with save_pretrained")
    return keys


def _base_description(model: Any) -> str:
    cfg = model.config
    return (f"{getattr(cfg, 'model_type', '?')} hidden_size={getattr(cfg, 'hidden_size', '?')} "
            f"vocab_size={getattr(cfg, 'vocab_size', '?')}")


def _adapter_description(weights: Path) -> str:
    """Shapes of the adapter's first LoRA A matrix: its in-features is the base's hidden size."""
    if weights.suffix != ".safetensors":
        return ""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        for k in f.keys():
            if "lora_A" in k:
                return f"; the adapter's {k} has shape {list(f.get_slice(k).get_shape())}"
    return ""


def recorded_template(adapter_dir: Path) -> PromptTemplate | None:
    path = adapter_dir / TEMPLATE_FILE
    return PromptTemplate.load(path) if path.is_file() else None


def template_warning(adapter_dir: Path, recorded: PromptTemplate | None, requested: str | None) -> str | None:
    """The loud warning when a requested template differs from the one the adapter was trained with."""
    if recorded is None or not requested:
        return None
    wanted = get_template(requested)
    if (wanted.text, wanted.answer_prefix, wanted.chat, wanted.system) == (
            recorded.text, recorded.answer_prefix, recorded.chat, recorded.system):
        return None
    return (f"PROMPT TEMPLATE MISMATCH: adapter {adapter_dir} was trained with template '{recorded.name}' "
            f"(recorded in {TEMPLATE_FILE}) but '{requested}' was requested. The requested template is used; "
            "scores will likely be far below what the adapter can do. Drop --template to use the recorded one.")


class LoraBackend(ModelBackend):
    """An ``HFBackend`` whose model is a ``PeftModel``; adds the adapter's identity and template."""

    def __init__(self, inner: HFBackend, adapter_dir: Path, base: str):
        self.inner = inner
        self.adapter_dir = adapter_dir
        self.base = base
        self.spec = inner.spec
        self.template = inner.template
        self.warnings = inner.warnings  # the same list: warnings added while generating show through

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def describe(self) -> ModelInfo:
        return ModelInfo(name=self.adapter_dir.name, backend="lora", dtype=self.inner.dtype,
                         adapter=str(self.adapter_dir), adapter_base=self.inner.name, fingerprint=self.fingerprint)

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        return self.inner.generate(prompts, config, progress)

    def generate_iter(self, prompts: Sequence[Prompt], config: GenerationConfig,
                      progress: ProgressCallback | None = None) -> Iterator[tuple[int, Generation]]:
        """Generations as they finish (``HFBackend.generate_iter``), for the cache to persist one by one."""
        return self.inner.generate_iter(prompts, config, progress)

    def close(self) -> None:
        self.inner.close()


def load_lora_backend(adapter_dir: str, options: BackendOptions, *, spec: str | None = None) -> LoraBackend:
    """``lora:ADAPTER_DIR``: check the adapter, load its base, apply it with ``PeftModel.from_pretrained``."""
    d = Path(adapter_dir).expanduser()
    config, weights = check_adapter_dir(d)
    recorded = recorded_template(d)
    base = options.base_model or config.get("base_model_name_or_path")
    if not base:
        raise ModelBackendError(f"{CONFIG_FILE} in {d} names no base_model_name_or_path; pass --base-model")
    from harness.models.embedded import resolve_model_ref
    base = resolve_model_ref(base)
    if _looks_like_path(base) and not Path(base).expanduser().exists():
        if options.base_model:
            raise ModelBackendError(f"--base-model {base} does not exist")
        raise ModelBackendError(
            f"{CONFIG_FILE} in {d} names base model '{base}', which does not exist on this machine "
            "(the adapter was probably trained elsewhere); pass --base-model PATH_OR_NAME, e.g. "
            "--base-model codellama/CodeLlama-13b-hf")
    warnings: list[str] = []
    msg = template_warning(d, recorded, options.template)
    if msg:
        log.warning(msg)
        warnings.append(msg)
    model, tokenizer = load_model_and_tokenizer(base, options, warnings)
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ModelBackendError(f"the lora backend needs peft ({exc}): pip install peft") from exc
    try:
        model = PeftModel.from_pretrained(model, str(d), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        text = str(exc)
        first = next((line.strip() for line in text.splitlines() if "size mismatch" in line), text[:400])
        raise ModelBackendError(
            f"adapter {d} does not fit base model {base} ({_base_description(model)}"
            f"{_adapter_description(weights)}): {first}. The adapter was trained on "
            f"'{config.get('base_model_name_or_path')}'; pass that model (or one with the same architecture, "
            "hidden size and vocabulary) with --base-model") from exc
    model.eval()
    quantize = resolve_quantize(options)
    fp = fingerprint_of({"backend": "lora", "base": model_fingerprint(base, model, options, quantize),
                         "adapter": dir_signature(d)})
    inner = HFBackend(model, tokenizer, spec=spec or f"lora:{adapter_dir}", fingerprint=fp,
                      warnings=warnings, template=recorded)
    return LoraBackend(inner, d, base)
