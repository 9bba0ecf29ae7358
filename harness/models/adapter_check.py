"""``txt2sql check-adapter DIR``: what must hold before an adapter is evaluated, gated or deployed.

Each check names what it found and the fix. In order, cheapest first:

1. ``files``: adapter_config.json and the weights exist, and the safetensors header reads (the team's
   ``SafetensorError … InvalidHeaderDeserialization`` comes from a patched ``state_dict``);
2. ``base``: every LoRA matrix fits the base model's layers (hidden size, vocabulary), checked on a
   weightless (meta-device) copy of the base, so a 13B base costs no memory;
3. ``template``: the adapter records the prompt template it was trained with, and it is the one
   evaluation will use;
4. ``tokenizer``: the base tokenizer has an EOS token, and its pad token is EOS or a special token
   (never an ordinary word such as id 0 of a vocabulary that uses it);
5. ``smoke``: a few benchmark questions generate, with statement-end stopping switched off, and each
   stops by EOS before ``max_new_tokens`` without looping: an adapter trained without EOS never stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ModelBackendError, Txt2SqlError
from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.lora import CONFIG_FILE, check_adapter_dir, recorded_template
from harness.prompts.templates import TEMPLATE_FILE, PromptTemplate, get_template

CHECKS = ("files", "base", "template", "tokenizer", "smoke")


@dataclass(frozen=True)
class CheckResult:
    name: str  # one of CHECKS
    ok: bool
    detail: str


@dataclass(frozen=True)
class AdapterReport:
    adapter_dir: Path
    results: tuple[CheckResult, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def describe(self) -> str:
        lines = [f"check-adapter {self.adapter_dir}: {'PASS' if self.passed else 'FAIL'}"]
        lines += [f"  {'ok  ' if r.ok else 'FAIL'} {r.name:<9} {r.detail}" for r in self.results]
        return "\n".join(lines)


@dataclass(frozen=True)
class SmokeConfig:
    prompts: tuple[Prompt, ...] = ()  # empty: the first ``questions`` of the benchmark split
    benchmark: Path | None = None
    split: str = "dev"
    questions: int = 5
    max_new_tokens: int = 160


def check_adapter(adapter_dir: Path | str, *, base_model: str | None = None, template: str | None = None,
                  options: BackendOptions | None = None, smoke: SmokeConfig | None = SmokeConfig()) -> AdapterReport:
    """Run the checks in order; a check that cannot run because an earlier one failed is skipped."""
    d = Path(adapter_dir).expanduser()
    results: list[CheckResult] = []
    try:
        config, weights = check_adapter_dir(d)
    except ModelBackendError as exc:
        return AdapterReport(d, (CheckResult("files", False, str(exc)),))
    results.append(CheckResult("files", True, f"{CONFIG_FILE} and {weights.name} read"))
    base = _base_path(d, config, base_model)
    results.append(_check_base(base, weights))
    results.append(_check_template(d, template))
    tok_result, tokenizer = _check_tokenizer(base)
    results.append(tok_result)
    if smoke is not None and all(r.ok for r in results if r.name in ("files", "base")) and tokenizer is not None:
        results.append(_check_smoke(d, base_model, template, options or BackendOptions(), smoke))
    return AdapterReport(d, tuple(results))


def _base_path(d: Path, config: dict[str, Any], base_model: str | None) -> str:
    from harness.models.embedded import resolve_model_ref

    base = base_model or config.get("base_model_name_or_path")
    if not base:
        raise ModelBackendError(f"{CONFIG_FILE} in {d} names no base_model_name_or_path; pass --base-model")
    return resolve_model_ref(base)


def _check_base(base: str, weights: Path) -> CheckResult:
    """Every lora_A has the base layer's in_features as columns, every lora_B its out_features as rows."""
    try:
        modules = _meta_modules(base)
    except (OSError, ValueError) as exc:
        return CheckResult("base", False, f"cannot read the base model {base}: {exc}; pass --base-model PATH")
    mismatches, seen = [], 0
    for key, shape in _tensor_shapes(weights).items():
        module, kind = _module_of(key)
        layer = modules.get(module)
        if layer is None or kind is None:
            continue
        seen += 1
        want = _expected_dim(layer, kind)
        got = shape[1] if kind in ("lora_A", "lora_embedding_B") else shape[0]
        if want is not None and got != want:
            mismatches.append(f"{key} {list(shape)} vs base {module} ({want})")
    if mismatches:
        return CheckResult("base", False, f"{len(mismatches)} LoRA matrices do not fit {base}: {mismatches[0]}. "
                                          "The adapter was trained on another base (hidden size or vocabulary "
                                          "differ); pass the right --base-model")
    if seen == 0:
        return CheckResult("base", False, f"none of the adapter's LoRA matrices names a layer of {base}: "
                                          "it was trained on another architecture; pass the right --base-model")
    return CheckResult("base", True, f"{seen} LoRA matrices fit {Path(base).name}")


def _meta_modules(base: str) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(base)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return dict(model.named_modules())


def _tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    if weights.suffix != ".safetensors":
        import torch

        return {k: tuple(v.shape) for k, v in torch.load(str(weights), map_location="meta").items()}
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _module_of(key: str) -> tuple[str, str | None]:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` -> (``model.layers.0.self_attn.q_proj``, lora_A)."""
    parts = key.split(".")
    for i, p in enumerate(parts):
        if p in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
            path = parts[:i]
            if path[:2] == ["base_model", "model"]:
                path = path[2:]
            return ".".join(path), p
    return "", None


def _expected_dim(layer: Any, kind: str) -> int | None:
    if kind == "lora_A":
        return getattr(layer, "in_features", None)
    if kind == "lora_B":
        return getattr(layer, "out_features", None)
    if kind == "lora_embedding_A":  # (r, num_embeddings): the vocabulary
        return getattr(layer, "num_embeddings", None)
    return getattr(layer, "embedding_dim", None)


def _check_template(d: Path, requested: str | None) -> CheckResult:
    try:
        recorded = recorded_template(d)
    except ModelBackendError as exc:
        return CheckResult("template", False, str(exc))
    if recorded is None:
        return CheckResult("template", False, f"no {TEMPLATE_FILE}: the adapter does not record the prompt it was "
                                              "trained with, so evaluation cannot use the same one. Train with "
                                              "txt2sql finetune, or save the training template with "
                                              f"PromptTemplate.save('{d / TEMPLATE_FILE}')")
    wanted: PromptTemplate = get_template(requested) if requested else recorded
    if _template_key(wanted) != _template_key(recorded):
        return CheckResult("template", False, f"trained with template '{recorded.name}' but evaluation would use "
                                              f"'{wanted.name}': drop --template, or retrain with '{wanted.name}'")
    return CheckResult("template", True, f"'{recorded.name}', the one evaluation uses")


def _template_key(t: PromptTemplate) -> tuple[str, str, bool, str]:
    return (t.text, t.answer_prefix, t.chat, t.system)


def _check_tokenizer(base: str) -> tuple[CheckResult, Any]:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as exc:
        return CheckResult("tokenizer", False, f"cannot load the tokenizer of {base}: {exc}"), None
    if tok.eos_token_id is None:
        return CheckResult("tokenizer", False, f"the tokenizer of {Path(base).name} has no EOS token: a model "
                                               "trained or run with it cannot stop; set eos_token"), None
    pad = tok.pad_token_id
    if pad is not None and pad != tok.eos_token_id and not _is_control_token(tok, pad):
        return CheckResult("tokenizer", False, f"pad id {pad} ({tok.convert_ids_to_tokens(pad)!r}) is an ordinary "
                                               "token: padding would be read as text; pad with EOS or a special "
                                               "token"), tok
    pad_text = "EOS (masked)" if pad is None or pad == tok.eos_token_id else repr(tok.pad_token)
    return CheckResult("tokenizer", True, f"EOS {tok.eos_token!r}, pad {pad_text}"), tok


def _is_control_token(tok: Any, token_id: int) -> bool:
    """Shaped like a control token (``<pad>``, ``<unk>``, ``<|endoftext|>``, ``[PAD]``), which ordinary text
    never spells. The tokenizer's own "special" list cannot tell: naming a vocabulary word as pad token
    puts it on that list."""
    text = str(tok.convert_ids_to_tokens(token_id))
    return (text.startswith("<") and text.endswith(">")) or (text.startswith("[") and text.endswith("]"))


def _smoke_prompts(smoke: SmokeConfig, template: PromptTemplate) -> Sequence[Prompt]:
    if smoke.prompts:
        return smoke.prompts
    from harness.benchmark.loader import default_benchmark_dir, load_benchmark
    from harness.prompts.templates import render_prompt

    questions = load_benchmark(smoke.benchmark or default_benchmark_dir(), smoke.split).questions
    return [render_prompt(q, template) for q in questions[:smoke.questions]]


def _check_smoke(d: Path, base_model: str | None, template: str | None, options: BackendOptions,
                 smoke: SmokeConfig) -> CheckResult:
    from dataclasses import replace

    from harness.models.lora import load_lora_backend
    from harness.models.registry import resolve_template

    try:
        backend = load_lora_backend(str(d), replace(options, base_model=base_model or options.base_model,
                                                    template=template or options.template))
    except Txt2SqlError as exc:
        return CheckResult("smoke", False, f"the adapter does not load: {exc}")
    try:
        prompts = _smoke_prompts(smoke, resolve_template(backend, options))
        gens = backend.generate(prompts, GenerationConfig(max_new_tokens=smoke.max_new_tokens, batch_size=8,
                                                          stop_at_statement_end=False, stop_on_loop=True))
    finally:
        backend.close()
    looped = [g.id for g in gens if g.finish_reason == "loop"]
    endless = [g.id for g in gens if g.finish_reason == "length"]
    if looped or endless:
        why = []
        if endless:
            why.append(f"{len(endless)} of {len(gens)} ran to {smoke.max_new_tokens} tokens without EOS "
                       f"(e.g. {endless[0]}): the adapter does not stop by itself; train with EOS after each answer")
        if looped:
            why.append(f"{len(looped)} of {len(gens)} looped (e.g. {looped[0]})")
        return CheckResult("smoke", False, "; ".join(why))
    mean = sum(g.tokens_out for g in gens) / max(1, len(gens))
    return CheckResult("smoke", True, f"{len(gens)} questions stopped by EOS, {mean:.0f} tokens on average")


def adapter_for_gate(candidate_model: str, explicit: Path | None) -> Path | None:
    """The adapter a gate must check: the one named, else the candidate run's ``lora:`` directory."""
    if explicit is not None:
        return explicit
    if candidate_model.startswith("lora:"):
        path = Path(candidate_model.removeprefix("lora:")).expanduser()
        return path if path.is_dir() else None
    return None
