"""Measure the database side on this machine: provisioning, safe execution, scoring and memory.

    python benchmarks/perf/execution.py [--out figures.json]

Figures (printed as JSON): local cluster start, template build + clone per data variant, per-query
latency of the Hangzhou test golds, a 10-million-row query under the 100,000-row cap (wall time and
peak Python memory), and execution-match scoring of two 100,000-row results. Targets are checked here,
never in unit tests: the row cap must keep peak memory far below what 10M rows would take.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

from figures import report  # benchmarks/perf/figures.py, beside this script

from harness.benchmark.loader import default_benchmark_dir, load_benchmark
from harness.db.executor import SafeExecutor
from harness.db.fixture import FixtureDatabases
from harness.db.local import LocalCluster
from harness.scoring.execution import execution_match
from harness.scoring.normalise import gold_is_ordered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", type=Path, default=default_benchmark_dir())
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    figures: dict[str, float | int | str] = {}
    bench = load_benchmark(args.benchmark, "test")
    t0 = time.perf_counter()
    with LocalCluster() as server:
        figures["cluster_start_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        with FixtureDatabases(server, bench, statement_timeout_ms=60_000) as fx:
            figures["fixtures_build_s"] = round(time.perf_counter() - t0, 3)
            figures["variants"] = len(fx.databases)
            vdb = fx.variants("default")[0]
            ex = SafeExecutor(fx.reader(vdb), statement_timeout_ms=60_000)
            latencies = []
            for q in bench.questions:
                t = time.perf_counter()
                ex.run(q.gold)
                latencies.append(time.perf_counter() - t)
            figures["gold_queries"] = len(latencies)
            figures["query_latency_median_ms"] = round(statistics.median(latencies) * 1000, 2)
            figures["query_latency_max_ms"] = round(max(latencies) * 1000, 2)

            tracemalloc.start()
            t = time.perf_counter()
            # a cross join streams; generate_series(1, 10000000) in FROM would first spill all its rows to a
            # temp file, which the reader role's temp_file_limit (64 MB) stops
            big = ex.run("SELECT a, md5(b::text) FROM generate_series(1, 10000) a, generate_series(1, 1000) b")
            figures["rows_10m_status"] = big.status
            figures["rows_10m_fetched"] = len(big.result.rows) if big.result else 0
            figures["rows_10m_s"] = round(time.perf_counter() - t, 2)
            figures["rows_10m_peak_python_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            tracemalloc.stop()

            a = ex.run("SELECT g, g * 0.5, md5(g::text) FROM generate_series(1, 100000) g")
            b = ex.run("SELECT md5(g::text), g * 0.5, g FROM generate_series(1, 100000) g ORDER BY random()")
            t = time.perf_counter()
            verdict = execution_match(a.result, b.result, ordered=gold_is_ordered("SELECT 1"))
            figures["score_100k_rows_s"] = round(time.perf_counter() - t, 2)
            figures["score_100k_rows_match"] = str(verdict.match)
            ex.close()
    figures["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report(figures, args.out)


if __name__ == "__main__":
    main()
