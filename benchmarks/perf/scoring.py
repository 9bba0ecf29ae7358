"""Measure execution-match scoring alone (pure, no database): wide results and large multisets.

    python benchmarks/perf/scoring.py [--rows 200] [--out figures.json]

Cases (printed as JSON, seconds per verdict, and the verdict):

* ``wrong_10_cols`` / ``wrong_14_cols``: a wrong prediction as wide as the gold, no column of which
  holds a gold column's values (before the column matching was polynomial, a 10-column one took 164 s
  and a 14-column one would have taken months);
* ``permuted_14_cols``: the gold's 14 columns in reverse order (must match);
* ``ambiguous_8_cols``: 8 columns each holding the same multiset {0..n-1} in different rows, the
  prediction a permutation of them (must match: found by pair pruning, not by trying 8! orders);
* ``identical_14_cols``: 14 identical columns against 13 of them and one different (no match);
* ``multiset_100k``: two 100,000-row, 3-column results equal within 1e-6 in a different row order.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from figures import report  # benchmarks/perf/figures.py, beside this script

from harness.db.executor import ResultSet
from harness.scoring.execution import execution_match


def result(rows: list[tuple[object, ...]], types: str = "int4") -> ResultSet:
    width = len(rows[0]) if rows else 0
    return ResultSet(tuple(f"c{i}" for i in range(width)), (types,) * width, tuple(rows))


def timed(gold: ResultSet, pred: ResultSet, ordered: bool = False) -> dict[str, object]:
    t0 = time.perf_counter()
    verdict = execution_match(gold, pred, ordered=ordered)
    return {"seconds": round(time.perf_counter() - t0, 4), "match": verdict.match, "reason": verdict.reason[:80]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = random.Random(0)
    n = args.rows
    figures: dict[str, object] = {}
    for width in (10, 14):
        gold = [tuple(rng.randint(0, 9) for _ in range(width)) for _ in range(n)]
        wrong = [tuple(v + 1 for v in row) for row in gold]
        figures[f"wrong_{width}_cols"] = timed(result(gold), result(wrong))
    gold14 = [tuple(rng.random() for _ in range(14)) for _ in range(n)]
    figures["permuted_14_cols"] = timed(result(gold14, "float8"),
                                        result([row[::-1] for row in gold14], "float8"), ordered=True)
    columns = [rng.sample(range(n), n) for _ in range(8)]
    order = rng.sample(range(8), 8)
    figures["ambiguous_8_cols"] = timed(result(list(zip(*columns, strict=True))),
                                        result(list(zip(*(columns[j] for j in order), strict=True))))
    same = [(1,) * 14] * n
    figures["identical_14_cols"] = timed(result(same), result([(1,) * 13 + (2,)] * n))
    big = [(i * 0.1, f"name {i % 1000}", i % 7) for i in range(100_000)]
    shuffled = [(a * (1 + 5e-7), b, c) for a, b, c in big]
    rng.shuffle(shuffled)
    figures["multiset_100k"] = timed(ResultSet(("a", "b", "c"), ("float8", "text", "int4"), tuple(big)),
                                     ResultSet(("a", "b", "c"), ("float8", "text", "int4"), tuple(shuffled)))
    report(figures, args.out)


if __name__ == "__main__":
    main()
