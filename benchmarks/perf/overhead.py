"""Non-generation overhead of the main job (issue 13, CPU): ``txt2sql eval`` as ``bash scripts/eval.sh``
runs it, the embedded model on the bundled benchmark, timed from this process's start.

    python benchmarks/perf/overhead.py            # reuses the generation cache (~/.cache/txt2sql, TXT2SQL_CACHE)
    python benchmarks/perf/overhead.py --fresh    # an empty generation cache: every question is generated
    python benchmarks/perf/overhead.py --fresh --limit 20 --db local   # other arguments go to `txt2sql eval`

Prints one JSON line: ``wall_s`` (process start, interpreter and imports included, to the end of the
console summary), ``generation_s`` (summary.json's ``generation_seconds``), ``non_generation_s`` and its
``non_generation_share``, and ``stages``: wall seconds of each stage of ``evaluate`` (``startup`` is
everything before it, ``console`` the summary printed after it; ``databases`` runs in its own thread
beside ``model load``, so the stages sum to more than the wall time). Issue 13's target: a share under
0.05 with ``--fresh``. The run directory goes to a temporary directory unless ``--out`` is given.
"""

from __future__ import annotations

import time

T0 = time.monotonic()  # before any heavy import

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def process_age() -> float:
    """Seconds since this process started (Linux /proc: interpreter start-up included), else since T0."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - T0


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fresh", action="store_true", help="generate every question (an empty generation cache)")
    args, eval_args = ap.parse_known_args(argv)
    from rich.console import Console

    from harness.cli import build_parser, eval_config_from_args
    from harness.pipeline import evaluate
    from harness.report.console import print_summary

    with tempfile.TemporaryDirectory(prefix="txt2sql-overhead-") as tmp:
        parsed = build_parser().parse_args(["eval", *eval_args])
        config = eval_config_from_args(parsed)
        config = dataclasses.replace(config, out=config.out or Path(tmp) / "run",
                                     cache_dir=Path(tmp) / "generations" if args.fresh else config.cache_dir)
        startup = process_age()
        result = evaluate(config)
        t_console = time.monotonic()
        print_summary(result.summary, Console(file=io.StringIO(), width=120))  # the CLI's work after evaluate
        console = time.monotonic() - t_console
        wall = process_age()
    generation = result.summary.generation_seconds
    stages = {"startup": startup, **result.stages, "console": console}
    mode = "no-cache" if not config.use_cache else "fresh-cache" if args.fresh else "warm-cache"
    return {"command": "python benchmarks/perf/overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "mode": mode, "model": config.model, "questions": result.summary.n,
            "wall_s": round(wall, 2), "generation_s": round(generation, 2),
            "non_generation_s": round(wall - generation, 2),
            "non_generation_share": round((wall - generation) / wall, 4),
            "stages": {k: round(v, 2) for k, v in stages.items()}}


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False))
