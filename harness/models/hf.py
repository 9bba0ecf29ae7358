"""The ``hf`` backend: a transformers causal LM, batched greedy generation that stops each sequence at
EOS, at the end of the first SQL statement (or closing fence), or when it starts looping.

``HFBackend`` takes an already loaded model and tokenizer; ``load_hf_backend`` loads them from a spec.
``lora`` and ``embedded`` compose these two rather than adding branches here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import distributed
from harness.errors import ModelBackendError
from harness.models.base import (
    BackendOptions,
    Generation,
    GenerationConfig,
    ModelBackend,
    ModelInfo,
    ProgressCallback,
    Prompt,
)
from harness.models.engine import Engine, Finished, LogitsHook, auto_batch_size
from harness.models.stopping import RowStopper, SqlStop, prompt_opens_fence

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

QUANT_PIP = "pip install 'txt2sql[quant]'"
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}
# What dtype="auto" means on a CPU. Measured on 2 cores, torch 2.13 (SmolLM2-135M, 64 new tokens):
# batch 1: bf16 ~22 tok/s vs fp32 ~16; batch 8: bf16 ~73-170 tok/s vs fp32 ~23-75. bf16 wins on this CPU.
CPU_AUTO_DTYPE = "bfloat16"
_SIGNATURE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "tokenizer.model", "adapter_config.json", "chat_template.jinja")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_SAMPLE = 1 << 20


def file_signature(path: Path) -> str:
    """Cheap identity of a (possibly many-GB) file: size + sha256 of its first and last MiB.

    A safetensors file starts with its header (names, shapes, offsets), so a re-saved or different
    model changes the signature without hashing gigabytes.
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            f.seek(size - _SAMPLE)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def dir_signature(path: Path) -> dict[str, str]:
    """Signatures of the files in a model/adapter directory that decide its outputs."""
    out: dict[str, str] = {}
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.name in _SIGNATURE_FILES or f.name.endswith(_WEIGHT_SUFFIXES)):
            out[f.name] = file_signature(f)
    return out


def fingerprint_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def resolve_quantize(options: BackendOptions, warnings: list[str] | None = None) -> str | None:
    """``options.quantize``, or the seed's ``load_in_8bit``/``load_in_4bit`` spelling mapped onto it.

    The mapping is logged and appended to ``warnings`` when a list is given.
    """
    quantize = options.quantize
    for bits in ("8bit", "4bit"):
        legacy = options.extra.get(f"load_in_{bits}")
        if legacy is not None and str(legacy).strip().lower() in ("1", "true", "yes", "on"):
            msg = (f"'load_in_{bits}' was removed from from_pretrained in transformers 5; "
                   f"using quantize={bits} (BitsAndBytesConfig) instead. Write --quantize {bits}.")
            if warnings is not None:
                log.warning(msg)
                warnings.append(msg)
            if quantize and quantize != bits:
                raise ModelBackendError(f"both quantize={quantize} and load_in_{bits} were given; keep one")
            quantize = bits
    if quantize not in (None, "8bit", "4bit"):
        raise ModelBackendError(f"--quantize {quantize}: expected 8bit or 4bit")
    return quantize


def resolve_dtype(name: str, on_cuda: bool) -> torch.dtype:
    import torch

    if name == "auto":
        if on_cuda:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return getattr(torch, CPU_AUTO_DTYPE)
    if name not in DTYPES:
        raise ModelBackendError(f"--dtype {name}: expected auto, {', '.join(sorted(DTYPES))}")
    return getattr(torch, DTYPES[name])


def load_model_and_tokenizer(path: str, options: BackendOptions, warnings: list[str]) -> tuple[Any, Any]:
    """Load weights and tokenizer with the options' dtype, device_map and quantisation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantize = resolve_quantize(options, warnings)
    on_cuda = torch.cuda.is_available()
    dtype = resolve_dtype(options.dtype, on_cuda)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantize:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelBackendError(f"--quantize {quantize} needs bitsandbytes, which is not installed: "
                                    f"{QUANT_PIP}")
        if not on_cuda:
            raise ModelBackendError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); none is visible. "
                                    "Drop --quantize to run in bf16/fp32 on this machine.")
        from transformers import BitsAndBytesConfig

        if quantize == "8bit" and dtype == torch.bfloat16:
            # LLM.int8() multiplies in fp16 and casts bf16 inputs on every call (and says so, each time).
            dtype = torch.float16
            kwargs["dtype"] = dtype
        kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if quantize == "8bit" else
                                         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                                                            bnb_4bit_quant_type="nf4"))
    device_map: Any = options.device_map or ("auto" if quantize else None)
    if on_cuda and not options.device_map and distributed.current() is not None:
        device_map = {"": torch.cuda.current_device()}  # one rank, one GPU (set when it joined the group)
    if device_map:
        kwargs["device_map"] = device_map
    local = Path(path)
    if not local.exists() and (path.startswith((".", "/", "~")) or "\\" in path or path.count("/") > 1):
        raise ModelBackendError(f"model path {path} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model: Any = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        where = "directory" if local.is_dir() else "model name (no such local directory; hub lookup failed)"
        raise ModelBackendError(f"cannot load hf model from {where} {path}: {exc}") from exc
    if not device_map and on_cuda:
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def model_fingerprint(path: str, model: Any, options: BackendOptions, quantize: str | None) -> dict[str, Any]:
    local = Path(path)
    ident: Any = dir_signature(local) if local.is_dir() else {
        "name": path, "commit": getattr(model.config, "_commit_hash", None)}
    return {"weights": ident, "dtype": str(getattr(model, "dtype", options.dtype)), "quantize": quantize}


class HFBackend(ModelBackend):
    """Generation with a loaded transformers model. Greedy unless ``config.temperature > 0``."""

    def __init__(self, model: Any, tokenizer: Any, *, spec: str, fingerprint: str,
                 warnings: list[str] | None = None, template: Any = None, name: str | None = None):
        self.model = model
        # what a run records: the model's own name (a directory's name when loaded from one) and dtype
        self.name = name or Path(str(getattr(model.config, "_name_or_path", "") or spec)).name
        self.dtype = str(getattr(model, "dtype", "")).removeprefix("torch.") or None
        self.tokenizer = tokenizer
        self.spec = spec
        self._fingerprint = fingerprint
        self.warnings: list[str] = warnings if warnings is not None else []
        self.template = template  # a PromptTemplate the weights were trained with, or None
        self._warned_no_chat = False
        self.logits_hook: LogitsHook | None = None  # set by the throughput benchmark to force EOS
        self.prefix_cache = True  # the engine keeps shared prompt prefixes (benchmarks/perf/prefix_cache.py turns it off)
        self.cuda_graphs = True  # on a GPU the engine replays recorded decoding steps (generation.py --no-graphs: off)
        # variable-length attention (harness.models.varlen): None where flash attention works (a GPU); False: sdpa
        self.varlen: bool | None = None
        self.compact: bool | None = None  # drop dead slots (None: the engine decides; generation.py --compact-too)
        self.pipeline: bool | None = None  # launch each step before reading the last one's tokens (None: on a GPU)
        self.fused: bool | None = None  # norms and rotary by Triton kernels (None: the engine decides; --unfused-too)
        self.last_run: dict[str, float] = {}  # the last generate call's engine figures (see ``_engine_figures``)
        if tokenizer.pad_token_id is None:  # Llama tokenizers have none: pad with EOS (masked anyway)
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_ids = self._eos_ids()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> ModelInfo:
        return ModelInfo(name=self.name, backend=self.spec.partition(":")[0], dtype=self.dtype,
                         fingerprint=self.fingerprint)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(x) for x in source)
        return ids

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids the model sees for a prompt (chat prompts through the tokenizer's chat template)."""
        if prompt.messages:
            msgs = [{"role": r, "content": c} for r, c in prompt.messages]
            if getattr(self.tokenizer, "chat_template", None):
                text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not self._warned_no_chat:
                msg = (f"{self.spec}: the tokenizer has no chat template; chat prompts are sent as plain text "
                       "(system, then user). Use a completion template such as seed-zh for this model.")
                log.warning(msg)
                self.warnings.append(msg)
                self._warned_no_chat = True
            text = "\n\n".join(c for _, c in prompt.messages) + "\n"
            return list(self.tokenizer(text)["input_ids"])
        return list(self.tokenizer(prompt.text)["input_ids"])

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        out: list[Generation | None] = [None] * len(prompts)
        for i, g in self.generate_iter(prompts, config, progress):
            out[i] = g
        return [g for g in out if g is not None]

    def generate_iter(self, prompts: Sequence[Prompt], config: GenerationConfig,
                      progress: ProgressCallback | None = None) -> Iterator[tuple[int, Generation]]:
        """``(index, generation)`` for each prompt as its row stops, through the slot engine
        (``harness.models.engine``): rows leave the batch as they stop and waiting prompts take their
        places. ``config.batch_size`` 0 means auto (``auto_batch_size``). A generation's ``seconds`` is
        its share of the wall time since the previous one finished, so they sum to the wall time."""
        import torch

        torch.manual_seed(config.seed)
        encoded = [self.encode(p) for p in prompts]
        if not encoded:
            return
        opened = [prompt_opens_fence(p.text) for p in prompts]
        decode = self._decoder()
        eos = frozenset(self.eos_ids)

        def make_stopper(item: int) -> RowStopper:
            return RowStopper(eos_ids=eos, max_new_tokens=config.max_new_tokens, decode=decode,
                              sql=SqlStop(opened[item]) if config.stop_at_statement_end else None,
                              stop_loop=config.stop_on_loop)

        engine = Engine(self.model, pad_id=self.tokenizer.pad_token_id, config=config, make_stopper=make_stopper,
                        logits_hook=self.logits_hook, prefix_cache=self.prefix_cache, cuda_graphs=self.cuda_graphs,
                        varlen=self.varlen, compact=self.compact, pipeline=self.pipeline, fused=self.fused)
        slots = config.batch_size or self.auto_batch_size(encoded, config.max_new_tokens, packed_prefill=engine.varlen)
        self.last_run = _engine_figures(engine, slots)
        t0 = time.perf_counter()
        for ended in engine.run(encoded, slots):
            now = time.perf_counter()
            self.last_run = _engine_figures(engine, engine.slots)
            for d in ended:
                yield d.item, self._generation(prompts[d.item], encoded[d.item], d, (now - t0) / len(ended))
                if progress is not None:
                    progress(1)
            t0 = time.perf_counter()
        if not engine.cuda_graphs:  # a step that could not be recorded once will not be next time either
            self.cuda_graphs = False

    def _generation(self, prompt: Prompt, encoded: list[int], done: Finished, seconds: float) -> Generation:
        return Generation(id=prompt.id, text=self.tokenizer.decode(done.ids, skip_special_tokens=True),
                          finish_reason=done.reason, tokens_in=len(encoded), tokens_out=len(done.ids),
                          seconds=seconds)

    def _decoder(self) -> Callable[[list[int]], str]:
        """Decode ids to text without special tokens, through the Rust tokenizer when there is one
        (skips the Python wrapper's per-call overhead; the stop check calls it twice per token)."""
        rust = getattr(self.tokenizer, "backend_tokenizer", None)
        if rust is not None and not getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
            return lambda ids: rust.decode(ids, skip_special_tokens=True)
        return lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)

    def auto_batch_size(self, encoded: Sequence[Sequence[int]], max_new_tokens: int,
                        packed_prefill: bool = False) -> int:
        """``--batch-size auto``: on a GPU the most rows whose KV cache fits the free memory (the engine
        backs off on OOM anyway); on a CPU the measured default. ``packed_prefill``: the engine prefills
        through varlen attention (no second copy of a chunk's keys and values to reserve)."""
        return auto_batch_size(self.model, encoded, max_new_tokens, packed_prefill)

    def close(self) -> None:
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def _engine_figures(engine: Engine, slots: int) -> dict[str, Any]:
    """What the throughput benchmark reads after a call: decoding steps, the batch used (after any
    out-of-memory backoff), prefill tokens computed (padding included, and not), the prefill's forwards, tokens
    reused from the prefix cache, prefill seconds, backoffs, decoding steps recorded as CUDA graphs and the
    seconds recording took, whether attention was variable-length, and how many norm modules and rotary functions
    (Python modules' ``apply_rotary_pos_emb``) fused kernels computed."""
    return {"steps": engine.steps, "slots": slots, "prefill_tokens": engine.prefill_tokens,
            "prefill_computed": engine.prefill_computed, "prefill_forwards": engine.prefill_forwards,
            "reused_tokens": engine.prefix.reused_tokens if engine.prefix is not None else 0,
            "prefill_s": round(engine.prefill_seconds, 3), "backoffs": engine.backoffs,
            "graph_captures": engine.graph_captures, "capture_s": round(engine.capture_seconds, 3),
            "captures": [(s, w, round(a, 3), round(b, 3)) for s, w, a, b in engine.capture_log],
            "varlen": engine.varlen, "fused": bool(engine.fused), "fused_norms": len(engine.fused.norms),
            "fused_rotary": len(engine.fused.rotary_modules)}


def load_hf_backend(path: str, options: BackendOptions, *, spec: str | None = None) -> HFBackend:
    """``hf:PATH_OR_NAME``: weights and tokenizer from a directory or a hub name."""
    warnings: list[str] = []
    quantize = resolve_quantize(options)
    model, tokenizer = load_model_and_tokenizer(path, options, warnings)
    fp = fingerprint_of({"backend": "hf", **model_fingerprint(path, model, options, quantize)})
    return HFBackend(model, tokenizer, spec=spec or f"hf:{path}", fingerprint=fp, warnings=warnings)
