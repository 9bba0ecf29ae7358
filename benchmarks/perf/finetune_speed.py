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
import json
import tempfile
import time
from dataclasses import replace
from typing import Any

from harness.benchmark.loader import default_benchmark_dir, load_benchmark
from harness.finetune.trainer import FinetuneConfig, finetune_questions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="embedded")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps after 5 warm-up steps")
    ap.add_argument("--out", default=None, help="append the JSON line here")
    args = ap.parse_args()
    import torch

    questions = list(load_benchmark(default_benchmark_dir(), "train").questions)
    config = replace(FinetuneConfig(), steps=args.steps, batch_size=args.batch_size, evals=1)
    profiler = _profiler(args.profile) if args.profile else None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="txt2sql-ft-speed-") as out:
        if profiler is not None:
            with profiler:
                result = finetune_questions(questions, base=args.base_model, out=out, config=config, progress=False)
        else:
            result = finetune_questions(questions, base=args.base_model, out=out, config=config, progress=False)
    line = json.dumps({"base": args.base_model, "steps": result.steps, "batch_size": args.batch_size,
                       "seconds_per_step": round(result.seconds_per_step, 4),
                       "tokens_per_second": round(result.tokens_per_second), "wall_s": round(time.perf_counter() - t0, 1),
                       "profiled": bool(profiler),
                       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"})
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


def _profiler(steps: int) -> Any:
    """A profiler that records ``steps`` optimizer steps after 5 warm-up ones and prints the top operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule
    from transformers import TrainerCallback

    def report(prof: Any) -> None:
        for key in ("self_cuda_time_total", "self_cpu_time_total"):
            print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=activities, schedule=schedule(wait=0, warmup=5, active=steps, repeat=1),
                   on_trace_ready=report)

    class StepProfiler(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            prof.step()

    import transformers

    original = transformers.Trainer.__init__

    def with_callback(self: Any, *a: Any, **k: Any) -> None:
        k["callbacks"] = [*(k.get("callbacks") or []), StepProfiler()]
        original(self, *a, **k)

    transformers.Trainer.__init__ = with_callback  # the profiler steps with the Trainer's own steps
    return prof


if __name__ == "__main__":
    main()
