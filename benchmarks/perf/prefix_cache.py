"""The engine's prefix cache on a real model: the same prompts generated with the cache and without it,
on the embedded SmolLM2 (the bundled benchmark's test prompts, template seed-zh), in one process.

    python benchmarks/perf/prefix_cache.py                        # fp32, 24 prompts, 24 new tokens, 6 rows
    python benchmarks/perf/prefix_cache.py --dtype bf16 --items 167

Prints one JSON object: per setting the wall and prefill seconds, prompt tokens computed and reused, and
how many outputs are identical between the two. In fp32 they must all be (the keys and values of a block
do not depend on what follows it); in bf16 they move within the batch-composition wobble.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from figures import report  # benchmarks/perf/figures.py, beside this script

from harness.benchmark.loader import default_benchmark_dir, load_benchmark
from harness.models.base import BackendOptions, GenerationConfig
from harness.models.registry import create_backend
from harness.prompts.templates import get_template, render_prompt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=24, help="first N test questions (default 24)")
    ap.add_argument("--dtype", default="fp32", help="fp32 (default: outputs must be equal) or bf16")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    backend = create_backend("embedded", BackendOptions(dtype=args.dtype))
    template = get_template(None)
    prompts = [render_prompt(q, template) for q in load_benchmark(default_benchmark_dir(), "test").questions[:args.items]]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    figures: dict[str, object] = {"items": len(prompts), "dtype": args.dtype, "batch_size": args.batch_size,
                                  "max_new_tokens": args.max_new_tokens}
    texts = {}
    for name, on in (("with_cache", True), ("without_cache", False)):
        backend.prefix_cache = on
        t0 = time.perf_counter()
        texts[name] = [g.text for g in backend.generate(prompts, config)]
        run = backend.last_run
        figures[name] = {"wall_s": round(time.perf_counter() - t0, 2), "prefill_s": run["prefill_s"],
                         "prefill_tokens": run["prefill_tokens"], "reused_tokens": run["reused_tokens"]}
    figures["identical_outputs"] = sum(a == b for a, b in zip(texts["with_cache"], texts["without_cache"], strict=True))
    report(figures, args.out)


if __name__ == "__main__":
    main()
