"""Generate a split's outputs with any model spec, without a database, as a replay file.

For machines with a GPU and no PostGIS (the ``device`` machine): generate there, bring the JSONL back,
score here with ``txt2sql eval --model replay:FILE``. Prompts, template resolution, batching and stopping
are the harness's own, so the outputs are what ``txt2sql eval`` would have generated with that backend.

    python benchmarks/gpu/generate.py --model lora:adapters/reference --base-model embedded \\
        --split test --out test.jsonl

Under ``torchrun --nproc-per-node N`` the questions are sharded across the ranks as ``txt2sql eval`` shards
them (harness/distributed.py) and rank 0 writes the file; ``--compare A B`` then checks two such files
item by item (1 GPU against N).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import distributed
from harness.benchmark.loader import default_benchmark_dir, load_benchmark
from harness.models.base import BackendOptions, GenerationConfig
from harness.models.registry import create_backend, resolve_template
from harness.prompts.templates import render_prompt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model spec (required unless --compare)")
    p.add_argument("--base-model")
    p.add_argument("--benchmark", type=Path, default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--limit", type=int, default=None, help="the split's first N questions only")
    p.add_argument("--no-graphs", action="store_true", help="decode eagerly, without CUDA graphs (to compare)")
    p.add_argument("--no-varlen", action="store_true", help="masked sdpa attention instead of variable-length "
                   "attention (to compare)")
    p.add_argument("--out", type=Path)
    p.add_argument("--compare", nargs=2, type=Path, metavar="JSONL", help="item-by-item equality of two outputs "
                   "(this script's, or benchmarks/perf/generation.py --gens-out)")
    p.add_argument("--min-equal", type=float, default=1.0, help="with --compare: the share that must be equal")
    a = p.parse_args()
    if a.compare:
        raise SystemExit(compare(*a.compare, a.min_equal))
    if a.out is None or a.model is None:
        p.error("--model and --out are required (or --compare A B)")
    group = distributed.init()
    questions = load_benchmark(a.benchmark or default_benchmark_dir(), a.split).questions[:a.limit]
    options = BackendOptions(base_model=a.base_model, dtype=a.dtype)
    backend = create_backend(a.model, options)
    if a.no_graphs:
        getattr(backend, "inner", backend).cuda_graphs = False  # LoraBackend wraps an HFBackend
    if a.no_varlen:
        getattr(backend, "inner", backend).varlen = False
    template = resolve_template(backend, options)
    t0 = time.perf_counter()
    prompts = [render_prompt(q, template) for q in questions]
    config = GenerationConfig(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
    if group is None:
        gens = backend.generate(prompts, config)
    else:
        gathered = distributed.generate_sharded(backend, prompts, config, None, group)
        distributed.finish()
        if gathered is None:  # not rank 0
            return
        gens = gathered
    seconds = time.perf_counter() - t0
    with open(a.out, "w", encoding="utf-8") as fh:
        for g in gens:
            fh.write(json.dumps({"id": g.id, "output": g.text, "finish_reason": g.finish_reason,
                                 "tokens_in": g.tokens_in, "tokens_out": g.tokens_out}, ensure_ascii=False) + "\n")
    print(json.dumps({"model": a.model, "split": a.split, "n": len(gens), "template": template.name,
                      "world": group.world if group else 1,
                      "seconds": round(seconds, 2), "tokens_out": sum(g.tokens_out for g in gens),
                      **getattr(getattr(backend, "inner", backend), "last_run", {})}))


def compare(first: Path, second: Path, min_equal: float = 1.0) -> int:
    """0 when both files hold the same questions and at least ``min_equal`` of them have the same output
    (1.0 where tokens are forced; a model's own bf16 choices may wobble with batch composition, which
    tests/models/test_engine.py bounds); prints the ones that differ."""
    a, b = ({r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
            for path in (first, second))
    differ = sorted(i for i in a.keys() & b.keys() if a[i] != b[i])
    equal = len(a.keys() & b.keys()) - len(differ)
    print(json.dumps({"items": len(a), "other_items": len(b), "only_one": sorted(a.keys() ^ b.keys())[:10],
                      "equal": equal, "differ": differ[:20]}))
    return 0 if a.keys() == b.keys() and equal >= min_equal * len(a) else 1

if __name__ == "__main__":
    main()
