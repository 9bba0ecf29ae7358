"""Training speed of ``txt2sql finetune``: seconds per optimizer step and tokens/s, and where a step's time
goes (issue 9: a 135M model at batch 16 must not take 0.18 s per step on an H200).

    python benchmarks/perf/finetune_speed.py --steps 60                 # s/step, tokens/s (one JSON line)
    python benchmarks/perf/finetune_speed.py --steps 30 --profile 10    # + the top CUDA and CPU operators

It trains the embedded model (``--base-model``) on the bundled train split with the command's defaults and
no dev scoring, in this process, so the profiler sees the ``Trainer``'s steps. Pin one GPU
(``CUDA_VISIBLE_DEVICES=0``): with several visible and no launcher, ``Trainer`` wraps the model in
``DataParallel``, which copies it to every GPU at every step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from figures import print_top_operators  # benchmarks/perf/figures.py, beside this script

from harness.benchmark.loader import default_benchmark_dir, load_benchmark
from harness.finetune.trainer import FinetuneConfig, finetune_questions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="embedded")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps after 5 warm-up steps")
    ap.add_argument("--lora-dropout", type=float, default=FinetuneConfig.dropout)
    ap.add_argument("--compile", choices=("default", "reduce-overhead"), default=None,
                    help="txt2sql finetune --compile MODE: torch.compile, batches padded to one width")
    ap.add_argument("--out", default=None, help="append the JSON line here")
    args = ap.parse_args()
    import torch

    questions = list(load_benchmark(default_benchmark_dir(), "train").questions)
    config = replace(FinetuneConfig(), steps=args.steps, batch_size=args.batch_size, evals=1,
                     dropout=args.lora_dropout, compile=args.compile)
    profiler = _profiler(args.profile) if args.profile else None
    step_ends: list[float] = []

    def step_ended() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
        if profiler is not None:
            profiler.step()

    _on_every_step(step_ended)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="txt2sql-ft-speed-") as out, profiler or contextlib.nullcontext():
        result = finetune_questions(questions, base=args.base_model, out=out, config=config, progress=False)
    line = json.dumps({"base": args.base_model, "steps": result.steps, "batch_size": args.batch_size,
                       "seconds_per_step": round(result.seconds_per_step, 4),
                       "median_step_s_second_half": _median_second_half(step_ends),
                       "lora_dropout": args.lora_dropout, "compile": args.compile,
                       "tokens_per_second": round(result.tokens_per_second), "wall_s": round(time.perf_counter() - t0, 1),
                       "profiled": bool(profiler),
                       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"})
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


def _median_second_half(ends: list[float]) -> float | None:
    """Steady-state seconds per step: the median gap between step ends over the run's second half
    (warm-up, compilation and the first allocations stay out of it)."""
    import statistics

    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    half = gaps[len(gaps) // 2:]
    return round(statistics.median(half), 4) if half else None


def _on_every_step(step_ended: Callable[[], None]) -> None:
    """Every Trainer built from now on calls ``step_ended`` after each optimizer step (``finetune_questions``
    builds one), so the clock and the profiler step with the Trainer's own steps."""
    import transformers

    class StepEnd(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            step_ended()

    original = transformers.Trainer.__init__

    def with_callback(self: Any, *a: Any, **k: Any) -> None:
        k["callbacks"] = [*(k.get("callbacks") or []), StepEnd()]
        original(self, *a, **k)

    transformers.Trainer.__init__ = with_callback


def _profiler(steps: int) -> Any:
    """A profiler that records ``steps`` optimizer steps after 5 warm-up ones and prints the top operators
    (``main`` steps it at each optimizer step)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=activities, schedule=schedule(wait=0, warmup=5, active=steps, repeat=1),
                   on_trace_ready=print_top_operators)

    return prof


if __name__ == "__main__":
    main()
