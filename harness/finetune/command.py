"""``txt2sql finetune``: options to ``FinetuneConfig``, the train and dev splits, a one-line report."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import Txt2SqlError
from harness.finetune.devscore import DevSet
from harness.finetune.trainer import CURVE_FILE, FinetuneConfig, finetune_questions


def add_finetune_options(f: argparse.ArgumentParser) -> None:
    d = FinetuneConfig()
    f.add_argument("--benchmark", type=Path, default=None, help="benchmark directory (default: fixtures/hangzhou)")
    f.add_argument("--split", default="train")
    f.add_argument("--base-model", default="embedded")
    f.add_argument("--out", type=Path, required=True, help="adapter directory (checkpoints go to OUT/checkpoints)")
    f.add_argument("--template", default=None)
    f.add_argument("--limit", type=int, help="train on the first N questions only")
    f.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs over the data)")
    f.add_argument("--epochs", type=float, default=d.epochs)
    f.add_argument("--lr", type=float, default=d.lr)
    f.add_argument("--lora-r", type=int, default=d.r)
    f.add_argument("--lora-alpha", type=int, default=None, help="default: 2 x --lora-r")
    f.add_argument("--lora-dropout", type=float, default=d.dropout)
    f.add_argument("--target-modules", default="all-linear",
                   help="all-linear (default) or a comma list, e.g. q_proj,v_proj")
    f.add_argument("--batch-size", type=int, default=d.batch_size)
    f.add_argument("--grad-accum", type=int, default=d.grad_accum, help="gradient accumulation steps")
    f.add_argument("--warmup", type=float, default=d.warmup, help="warm-up share of the steps (0.05)")
    f.add_argument("--scheduler", default=d.scheduler, help="cosine | linear | constant_with_warmup | ...")
    f.add_argument("--max-length", type=int, default=d.max_length)
    f.add_argument("--evals", type=int, default=d.evals, help="dev scorings (= checkpoints) over the run")
    f.add_argument("--dev-split", default="dev", help="split scored at checkpoints; 'none' to skip")
    f.add_argument("--dev-limit", type=int, default=None)
    f.add_argument("--dev-db", default="auto",
                   help="database for dev scoring: auto | local | docker | DSN | none (exact match only)")
    f.add_argument("--quantize", choices=("4bit",), default=None, help="QLoRA: 4-bit base (bitsandbytes, GPU)")
    f.add_argument("--neftune-alpha", type=float, default=None, help="NEFTune embedding noise (e.g. 5)")
    f.add_argument("--dtype", default="auto")
    f.add_argument("--seed", type=int, default=d.seed)
    f.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints")
    f.add_argument("--no-progress", action="store_true")


def _check(name: str, value: float | None, lo: float, hi: float | None = None) -> None:
    if value is None:
        return
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo} to {hi}" if hi is not None else f">= {lo}"
        raise Txt2SqlError(f"{name} {value}: expected {rng}")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    for name, lo, hi in (("steps", 1, None), ("epochs", 0.01, None), ("lr", 1e-8, 1.0), ("lora_r", 1, 1024),
                         ("lora_dropout", 0.0, 0.9), ("batch_size", 1, None), ("grad_accum", 1, None),
                         ("warmup", 0.0, 0.9), ("max_length", 16, None), ("evals", 0, 1000)):
        _check("--" + name.replace("_", "-"), getattr(args, name), lo, hi)
    targets = args.target_modules if args.target_modules == "all-linear" else tuple(
        t.strip() for t in args.target_modules.split(",") if t.strip())
    return FinetuneConfig(steps=args.steps, epochs=args.epochs, lr=args.lr, r=args.lora_r,
                          alpha=args.lora_alpha or 2 * args.lora_r, dropout=args.lora_dropout, target_modules=targets,
                          batch_size=args.batch_size, grad_accum=args.grad_accum, warmup=args.warmup,
                          scheduler=args.scheduler, max_length=args.max_length, evals=args.evals,
                          quantize=args.quantize, seed=args.seed, neftune_alpha=args.neftune_alpha)


def finetune_from_args(args: argparse.Namespace) -> int:
    from harness.benchmark.loader import default_benchmark_dir, load_benchmark

    config = config_from_args(args)  # option errors first, before anything is loaded
    bench_dir = Path(args.benchmark or default_benchmark_dir())
    questions = list(load_benchmark(bench_dir, args.split).questions)
    questions = questions[:args.limit] if args.limit else questions
    dev = None
    if args.dev_split and args.dev_split != "none" and config.evals > 0:
        dev_qs = tuple(load_benchmark(bench_dir, args.dev_split).questions)
        dev = DevSet(bench_dir, args.dev_split, dev_qs[:args.dev_limit] if args.dev_limit else dev_qs, db=args.dev_db)
    res = finetune_questions(questions, base=args.base_model, out=args.out, template=args.template, config=config,
                             dtype=args.dtype, dev=dev, resume=args.resume, progress=not args.no_progress)
    best = (f"; best dev {res.best.metric} {res.best.value:.3f} at step {res.best.step} "
            f"(degenerate {res.best.degenerate_rate:.3f})" if res.best else "")
    print(f"adapter written to {res.adapter_dir} ({res.examples} examples, {res.steps} steps, loss "
          f"{res.first_loss:.3f} -> {res.last_loss:.3f}, {res.seconds:.0f} s of which {res.dev_seconds:.0f} s dev scoring; "
          f"training {res.seconds_per_step:.3f} s/step, {res.tokens_per_second:.0f} tokens/s{best}); curve in {res.adapter_dir / CURVE_FILE}; evaluate with "
          f"--model lora:{res.adapter_dir}")
    return 0
