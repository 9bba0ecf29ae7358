"""Measure what hostile predictions cost the harness: wall time per question and resident memory.

    python benchmarks/perf/hostile.py [--statement-timeout 2] [--out figures.json]

Each case is one question of a one-variant copy of the mini benchmark, whose replayed prediction is the
hostile SQL, evaluated by ``txt2sql``'s own ``evaluate()`` in a fresh child process (so the peak resident
memory, ``ru_maxrss``, is that case's alone) against one local cluster shared through a DSN. Per case it
prints the status, the question's wall time (the item's ``score`` timing: gold and prediction executed
and scored) and the child's peak RSS, and checks the two targets of issue 11:

- wall time per question <= statement timeout + a fixed margin (``MARGIN_S``: the watchdog's
  abandon grace plus cancel, drain and load time);
- resident memory < 1 GiB.

Cases marked ``(scoring)`` or ``(extraction)`` exercise other stages (harness/scoring, harness/sql); a
child that does not finish within ``--case-limit`` seconds is killed and reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import report  # benchmarks/perf/figures.py, beside this script

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "tests" / "data" / "mini"
MARGIN_S = 2.5
RSS_LIMIT_MIB = 1024
_COLS12 = ", ".join(f"g + {i} AS c{i}" for i in range(12))
_COLS12_WRONG = ", ".join(f"g + {11 - i} + (g % 2) AS c{i}" for i in range(12))

# (id, prediction, gold); the gold is a cheap query unless the case needs a particular one
CASES: list[tuple[str, str, str]] = [
    ("control", "SELECT count(*) FROM rfgcpy", "SELECT count(*) FROM rfgcpy"),
    ("cross-join-count", "SELECT count(*) FROM generate_series(1, 1000) a, generate_series(1, 1000) b, "
                         "generate_series(1, 1000) c", "SELECT 1"),
    ("slow-rows-per-fetch", "SELECT g, (SELECT count(*) FROM generate_series(1, 2000 + g - g) a, "
                            "generate_series(1, 1000) b) FROM generate_series(1, 200) g", "SELECT 1"),
    ("recursive-cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
     "SELECT 1"),
    ("recursive-cte-cpu", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r, "
                          "generate_series(1, 300000) g WHERE g = 1) SELECT count(*) FROM r", "SELECT 1"),
    ("st-buffer-50m-segments", "SELECT ST_NPoints(ST_Buffer(ST_MakePoint(0, 0), 1, 50000000))", "SELECT 1"),
    ("st-subdivide", "SELECT count(*) FROM ST_Subdivide(ST_Buffer(ST_MakePoint(0, 0), 1, 400000), 5)", "SELECT 1"),
    ("array-8m-elements", "SELECT array_fill(1, ARRAY[8000000])", "SELECT 1"),
    ("array-agg-8m", "SELECT array_agg(g) FROM generate_series(1, 8000000) g", "SELECT 1"),
    ("ten-200mb-rows", "SELECT repeat('x', 200000000) FROM generate_series(1, 10)", "SELECT 1"),
    ("one-500mb-value", "SELECT repeat('x', 500000000)", "SELECT 1"),
    ("10m-rows-streamed", "SELECT a, md5(b::text) FROM generate_series(1, 10000) a, generate_series(1, 1000) b",
     "SELECT 1"),
    ("sort-spills-to-disk", "SELECT count(*) FROM (SELECT repeat('x', 5000) || g AS s "
                            "FROM generate_series(1, 100000) g ORDER BY 1) t", "SELECT 1"),
    ("wal-message", "SELECT pg_logical_emit_message(false, 'p', repeat('x', 100000000))", "SELECT 1"),
    ("ts-stat-inner-query", "SELECT * FROM ts_stat('SELECT pg_advisory_lock(1)::text::tsvector')", "SELECT 1"),
    ("sleep", "SELECT pg_sleep(3600)", "SELECT 1"),
    ("json-5000-deep", "SELECT '" + "[" * 5000 + "]" * 5000 + "'::jsonb", "SELECT 1"),
    ("sum-20000-terms", "SELECT " + "+".join(["1"] * 20000), "SELECT 1"),
    ("parens-5000-deep", "SELECT " + "(" * 5000 + "1" + ")" * 5000, "SELECT 1"),
    ("12-columns-permuted (scoring)", f"SELECT {_COLS12_WRONG} FROM generate_series(1, 200) g",
     f"SELECT {_COLS12} FROM generate_series(1, 200) g"),
    ("6000-answer-headers (extraction)", "答案：" * 6000 + "SELECT 1", "SELECT 1"),
]


def _benchmark(root: Path) -> None:
    """A one-variant copy of the mini benchmark with one question per case."""
    shutil.copy(MINI / "schema.sql", root / "schema.sql")
    shutil.copy(MINI / "data" / "v1.sql", root / "data.sql")
    with (root / "hostile.jsonl").open("w", encoding="utf-8") as fh:
        for cid, _, gold in CASES:
            fh.write(json.dumps({"id": cid, "question": f"hostile case {cid}", "answer": gold},
                                ensure_ascii=False) + "\n")
    with (root / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for cid, pred, _ in CASES:
            fh.write(json.dumps({"id": cid, "output": pred}, ensure_ascii=False) + "\n")


def child(args: argparse.Namespace) -> None:
    """One case in this process; prints one JSON line."""
    import resource

    from harness.pipeline import EvalConfig, evaluate
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        result = evaluate(EvalConfig(benchmark=args.bench, split="hostile", model=f"replay:{args.bench}/predictions.jsonl",
                                     db=args.dsn, out=Path(out) / "run", use_cache=False, progress=False,
                                     ids=frozenset({args.child}), statement_timeout_ms=int(args.statement_timeout * 1000)))
    (item,) = result.items
    print(json.dumps({"status": str(getattr(item.status, "value", item.status)),
                      "question_s": item.timings.get("score"), "run_s": round(time.monotonic() - t0, 2),
                      "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "error": (item.error or "")[:120]}, ensure_ascii=False))


def _run_case(cid: str, bench: Path, dsn: str, args: argparse.Namespace) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", cid, "--bench", str(bench), "--dsn", dsn,
           "--statement-timeout", str(args.statement_timeout)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.case_limit, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    except subprocess.TimeoutExpired:
        return {"status": f"KILLED after {args.case_limit} s", "question_s": None, "rss_mib": None}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"status": f"CRASH rc={proc.returncode}", "error": proc.stderr.strip().splitlines()[-1:],
                "question_s": None, "rss_mib": None}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--statement-timeout", type=float, default=2.0, help="seconds (default 2, as in issue 11)")
    ap.add_argument("--case-limit", type=float, default=180.0, help="kill a case's child after this many seconds")
    ap.add_argument("--only", help="comma-separated case ids")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--bench", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from harness.db.local import LocalCluster
    wanted = set(args.only.split(",")) if args.only else None
    figures: dict[str, object] = {"statement_timeout_s": args.statement_timeout, "margin_s": MARGIN_S,
                                  "rss_limit_mib": RSS_LIMIT_MIB, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp, LocalCluster() as server:
        bench = Path(tmp)
        _benchmark(bench)
        a = server.admin
        dsn = f"host={a.host} port={a.port} user={a.user} dbname=postgres"
        for cid, _, _ in CASES:
            if wanted and cid not in wanted:
                continue
            rec = _run_case(cid, bench, dsn, args)
            q, rss = rec.get("question_s"), rec.get("rss_mib")
            rec["within_time"] = q is not None and float(q) <= args.statement_timeout + MARGIN_S
            rec["within_memory"] = rss is not None and float(rss) < RSS_LIMIT_MIB
            figures["cases"][cid] = rec  # type: ignore[index]
            print(f"{cid:36} {rec['status']:14} question {q if q is not None else '-':>8} s   "
                  f"rss {rss if rss is not None else '-':>8} MiB   "
                  f"{'ok' if rec['within_time'] else 'OVER TIME'} {'ok' if rec['within_memory'] else 'OVER MEMORY'}",
                  flush=True)
    report(figures, args.out, echo=False)  # the cases were printed one line each as they ran


if __name__ == "__main__":
    main()
