"""Generate a split's outputs with any model spec, without a database, as a replay file.

For machines with a GPU and no PostGIS (the ``device`` machine): generate there, bring the JSONL back,
score here with ``txt2sql eval --model replay:FILE``. Prompts, template resolution, batching and stopping
are the harness's own, so the outputs are what ``txt2sql eval`` would have generated with that backend.

    python benchmarks/gpu/generate.py --model lora:adapters/reference --base-model embedded \\
        --split test --out test.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness.benchmark.loader import default_benchmark_dir, load_benchmark
from harness.models.base import BackendOptions, GenerationConfig
from harness.models.registry import create_backend, resolve_template
from harness.prompts.templates import render_prompt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--base-model")
    p.add_argument("--benchmark", type=Path, default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    questions = load_benchmark(a.benchmark or default_benchmark_dir(), a.split).questions
    options = BackendOptions(base_model=a.base_model, dtype=a.dtype)
    backend = create_backend(a.model, options)
    template = resolve_template(backend, options)
    t0 = time.perf_counter()
    gens = backend.generate([render_prompt(q, template) for q in questions],
                            GenerationConfig(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size))
    seconds = time.perf_counter() - t0
    with open(a.out, "w", encoding="utf-8") as fh:
        for g in gens:
            fh.write(json.dumps({"id": g.id, "output": g.text, "finish_reason": g.finish_reason,
                                 "tokens_in": g.tokens_in, "tokens_out": g.tokens_out}, ensure_ascii=False) + "\n")
    print(json.dumps({"model": a.model, "split": a.split, "n": len(gens), "template": template.name,
                      "seconds": round(seconds, 2), "tokens_out": sum(g.tokens_out for g in gens)}))


if __name__ == "__main__":
    main()
