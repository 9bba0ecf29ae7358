"""LoRA fine-tuning with transformers' ``Trainer``, scored on the dev split by the harness at checkpoints.

``Trainer`` brings what a hand-written loop kept lacking and others maintain for us: warm-up and a
decaying schedule, gradient accumulation, bf16 autocast, length-grouped batches, checkpoints that resume
(optimizer, scheduler and RNG state included) and a progress bar with the loss. What is ours: the
training examples (``data.py``), the dev-set scoring with the harness at every checkpoint, keeping the best
adapter, and the curve written beside it.

The adapter is written with a plain ``save_pretrained`` (never a patched ``state_dict``: that is how the
seed's adapter ended up with an unreadable safetensors header) together with ``txt2sql_template.json``,
which ``lora:`` reads back so evaluation uses the template the adapter was trained with.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.benchmark.model import Question
from harness.errors import ModelBackendError
from harness.finetune.data import ExampleDataset, RightPaddingCollator, encode_all
from harness.finetune.devscore import DevScore, DevSet, in_training_backend, score_backend, summarise_curve
from harness.prompts.templates import TEMPLATE_FILE, PromptTemplate, get_template

log = logging.getLogger(__name__)

CURVE_FILE = "txt2sql_curve.json"
CURVE_PLOT = "txt2sql_curve.png"


@dataclass(frozen=True)
class FinetuneConfig:
    """Defaults measured on the bundled train split (see docs/case-study.md)."""

    steps: int | None = None  # None: ``epochs`` over the data
    epochs: float = 2.0
    lr: float = 3e-4
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    batch_size: int = 16
    grad_accum: int = 1
    warmup: float = 0.05  # a share of the steps
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_length: int = 1024
    evals: int = 4  # dev scorings (and checkpoints) over the run
    quantize: str | None = None  # "4bit": QLoRA (bitsandbytes)
    seed: int = 0
    neftune_alpha: float | None = None
    save_dtype: str = "bf16"  # adapter weights on disk: half the bytes of fp32, same accuracy at load
    compile: str | None = None  # torch.compile mode ("default", "reduce-overhead"): batches padded to one width


@dataclass(frozen=True)
class FinetuneResult:
    adapter_dir: Path
    steps: int
    examples: int
    first_loss: float
    last_loss: float
    seconds: float
    tokens_per_second: float = 0.0
    seconds_per_step: float = 0.0
    best: DevScore | None = None
    tokens: int = 0  # real (unpadded) tokens trained on in this call
    curve: tuple[DevScore, ...] = field(default=())
    dev_seconds: float = 0.0  # of ``seconds``, spent scoring the dev split


def finetune_questions(questions: Sequence[Question], *, base: str, out: Path | str,
                       template: str | PromptTemplate | None = None, config: FinetuneConfig = FinetuneConfig(),
                       dtype: str = "auto", dev: DevSet | None = None, resume: bool = False,
                       progress: bool = True) -> FinetuneResult:
    """Train a LoRA adapter on ``questions`` (their first gold); keep the checkpoint best on ``dev``."""
    from harness.models.embedded import resolve_model_ref

    if not questions:
        raise ModelBackendError("no training questions: the split is empty")
    tmpl = template if isinstance(template, PromptTemplate) else get_template(template)
    out = Path(out)
    base_ref, base_path = base, resolve_model_ref(base)
    model, tokenizer = _load_for_training(base_path, config, dtype)
    examples = encode_all(tokenizer, tmpl, questions, config.max_length)
    collator = RightPaddingCollator(tokenizer.pad_token_id, width=_one_width(examples) if config.compile else None)
    total_steps = config.steps or math.ceil(config.epochs * len(examples) / (config.batch_size * config.grad_accum))
    every = max(1, total_steps // max(1, config.evals))
    best_dir = out / "checkpoints" / "best"
    keeper = _BestKeeper(tokenizer, tmpl, dev, best_dir, every)
    trainer = _make_trainer(model, ExampleDataset(examples), collator, out, config, total_steps, every, keeper,
                            progress)
    t0 = time.perf_counter()
    resume_from = _resume_point(out, resume)
    first_step = int(resume_from.rsplit("-", 1)[1]) if resume_from else 0
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    if dev is not None and (not keeper.curve or keeper.curve[-1].step != total_steps):
        keeper.score(trainer.model, total_steps)
    final = best_dir if keeper.best_step is not None else None
    _write_adapter(trainer.model, out, final, base_ref, base_path, tmpl, config)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    training = max(output.metrics.get("train_runtime", seconds) - keeper.seconds, 1e-9)
    steps_run = max(1, trainer.state.global_step - first_step)
    result = FinetuneResult(out, trainer.state.global_step, len(examples), losses[0] if losses else float("nan"),
                            losses[-1] if losses else float("nan"), seconds, collator.tokens_seen / training,
                            training / steps_run, summarise_curve(keeper.curve), collator.tokens_seen,
                            tuple(keeper.curve), keeper.seconds)
    _write_curve(out, result, config, trainer.state.log_history, training_sources(questions))
    return result


def training_sources(questions: Sequence[Question]) -> dict[str, int]:
    """Questions per source file (``Question.source`` is ``file:line``): what the adapter was trained on."""
    counts: dict[str, int] = {}
    for q in questions:
        name = q.source.rsplit(":", 1)[0] if q.source else "(unknown)"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _load_for_training(base: str, config: FinetuneConfig, dtype: str) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.hf import resolve_dtype

    torch.manual_seed(config.seed)
    on_cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.eos_token_id is None:
        raise ModelBackendError(f"the tokenizer of {base} has no EOS token: the adapter could never learn to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked out of loss and attention
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, on_cuda)}
    if config.quantize:
        kwargs["quantization_config"] = _quantization(config.quantize, on_cuda)
    model: Any = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if config.quantize:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif on_cuda:
        model = model.to("cuda")
    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tokenizer


def _quantization(mode: str, on_cuda: bool) -> Any:
    if mode != "4bit":
        raise ModelBackendError(f"--quantize {mode}: fine-tuning supports 4bit (QLoRA) only")
    if not on_cuda:
        raise ModelBackendError("--quantize 4bit needs a CUDA GPU (bitsandbytes); drop it on the CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelBackendError("--quantize 4bit needs bitsandbytes: pip install 'txt2sql[quant]'") from exc
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _training_arguments(out: Path, config: FinetuneConfig, total_steps: int, every: int, progress: bool) -> Any:
    import torch
    from transformers import TrainingArguments

    on_cuda = torch.cuda.is_available()
    wanted: dict[str, Any] = dict(
        output_dir=str(out / "checkpoints"), max_steps=total_steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.lr, lr_scheduler_type=config.scheduler,
        warmup_steps=max(1, round(config.warmup * total_steps)), weight_decay=config.weight_decay,
        logging_steps=max(1, min(10, every)), save_strategy="steps", save_steps=every, save_total_limit=1,
        bf16=on_cuda and torch.cuda.is_bf16_supported() and not config.quantize, seed=config.seed,
        data_seed=config.seed, report_to="none", remove_unused_columns=False, disable_tqdm=not progress,
        dataloader_num_workers=0, use_cpu=not on_cuda, neftune_noise_alpha=config.neftune_alpha,
        train_sampling_strategy="group_by_length", group_by_length=True)
    if config.compile:
        wanted.update(torch_compile=True, torch_compile_mode=config.compile)
    accepted = inspect.signature(TrainingArguments.__init__).parameters
    # transformers renamed group_by_length to train_sampling_strategy; pass whichever this version takes
    return TrainingArguments(**{k: v for k, v in wanted.items() if k in accepted})


def _make_trainer(model: Any, dataset: ExampleDataset, collator: RightPaddingCollator, out: Path,
                  config: FinetuneConfig, total_steps: int, every: int, keeper: _BestKeeper, progress: bool) -> Any:
    from transformers import Trainer

    args = _one_gpu_unless_launched(_training_arguments(out, config, total_steps, every, progress))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=[keeper.callback()])
    return trainer


def _one_width(examples: Sequence[Any]) -> int:
    """The one batch width of a compiled run: the longest example, rounded up to 64 tokens. A step is
    bound by launching ~8,000 small kernels on the host, not by the GPU (docs/case-study.md); a single
    shape compiles once and lets ``reduce-overhead`` replay the step as CUDA graphs."""
    longest = max(len(ex.input_ids) for ex in examples)
    return -(-longest // 64) * 64


def _one_gpu_unless_launched(args: Any) -> Any:
    """Several GPUs visible and no launcher: train on the first only. ``Trainer`` would wrap the model in
    ``DataParallel``, which copies it to every GPU at every step: measured on two H200s, 1.0 s/step
    against 0.23 on one. Data parallelism comes from ``torchrun`` / ``accelerate launch`` (DDP) instead.
    (``_n_gpu`` is how transformers itself turns DataParallel off for model-parallel models.)"""
    if args.n_gpu > 1 and args.world_size == 1:
        log.warning("%d GPUs visible without a launcher: training on the first only; for data-parallel "
                    "training launch with torchrun or accelerate launch", args.n_gpu)
        args._n_gpu = 1
    return args


def _resume_point(out: Path, resume: bool) -> str | None:
    if not resume:
        return None
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if not ckpts:
        raise ModelBackendError(f"--resume: no checkpoint-N folder in {out / 'checkpoints'}; start without --resume")
    return str(ckpts[-1])


class _BestKeeper:
    """Scores the dev split at each checkpoint and keeps a copy of the best adapter so far."""

    def __init__(self, tokenizer: Any, template: PromptTemplate, dev: DevSet | None, best_dir: Path,
                 every: int) -> None:
        self.tokenizer, self.template, self.dev, self.best_dir, self.every = tokenizer, template, dev, best_dir, every
        self.curve: list[DevScore] = []
        self.best_step: int | None = None
        self.seconds = 0.0  # spent scoring the dev split: not training, kept out of tokens/s and s/step
        self._load_previous()

    def _load_previous(self) -> None:  # a resumed run keeps the curve and best of the run it resumes
        path = self.best_dir.parent / "dev_curve.json"
        if path.is_file() and (self.best_dir / "adapter_config.json").is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.curve = [DevScore(**d) for d in data["curve"]]
            self.best_step = data.get("best_step")

    def score(self, model: Any, step: int) -> None:
        if self.dev is None:
            return
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            s = score_backend(in_training_backend(model, self.tokenizer, self.template, step), self.dev,
                              self.template, step)
        finally:
            self.tokenizer.padding_side = "right"
            if was_training:
                model.train()
            self.seconds += time.perf_counter() - t0
        self.curve.append(s)
        log.info("step %d: dev %s %.3f, degenerate %.3f", step, s.metric, s.value, s.degenerate_rate)
        if summarise_curve(self.curve) is s:
            self.best_step = step
            shutil.rmtree(self.best_dir, ignore_errors=True)
            model.save_pretrained(self.best_dir)
        self.best_dir.parent.mkdir(parents=True, exist_ok=True)
        (self.best_dir.parent / "dev_curve.json").write_text(json.dumps(
            {"best_step": self.best_step, "curve": [asdict(c) for c in self.curve]}, indent=2), encoding="utf-8")

    def callback(self) -> Any:
        from transformers import TrainerCallback

        keeper = self

        class DevCheckpoints(TrainerCallback):  # type: ignore[misc]
            def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
                if model is not None and not any(c.step == state.global_step for c in keeper.curve):
                    keeper.score(model, state.global_step)

        return DevCheckpoints()


def _write_adapter(model: Any, out: Path, best: Path | None, base_ref: str, base_path: str,
                   template: PromptTemplate, config: FinetuneConfig) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if best is not None:  # the best checkpoint's adapter, as save_pretrained wrote it
        for f in best.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
    else:
        model.save_pretrained(out)
    _cast_weights(out / "adapter_model.safetensors", {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        config.save_dtype))
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if base_ref != base_path:  # record the portable name (embedded:...), not this machine's cache path
        cfg["base_model_name_or_path"] = base_ref
    cfg["inference_mode"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    template.save(out / TEMPLATE_FILE)


def _cast_weights(path: Path, dtype: Any) -> None:
    """Store the adapter's tensors in half precision: a plain safetensors file, every tensor kept."""
    if dtype is None or not path.is_file():
        return
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_curve(out: Path, result: FinetuneResult, config: FinetuneConfig, history: list[dict[str, Any]],
                 sources: dict[str, int]) -> None:
    loss = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")} for h in history if "loss" in h]
    record = {"config": asdict(config), "examples": result.examples, "data": sources, "steps": result.steps,
              "seconds": round(result.seconds, 1), "seconds_per_step": round(result.seconds_per_step, 4),
              "tokens_per_second": round(result.tokens_per_second, 1), "dev_seconds": round(result.dev_seconds, 1),
              "best": asdict(result.best) if result.best else None,
              "dev_curve": [asdict(c) for c in result.curve],
              "loss": loss}
    (out / CURVE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if result.curve:
        _plot_curve(out / CURVE_PLOT, result.curve, loss)


def _plot_curve(path: Path, curve: Sequence[DevScore], loss: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([c.step for c in curve], [c.value for c in curve], "o-", label=f"dev {curve[0].metric}")
    ax.plot([c.step for c in curve], [c.degenerate_rate for c in curve], "s--", label="dev degenerate rate")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    if loss:
        ax2 = ax.twinx()
        ax2.plot([x["step"] for x in loss], [x["loss"] for x in loss], color="grey", alpha=0.5, label="train loss")
        ax2.set_ylabel("train loss")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
