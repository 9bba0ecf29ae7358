"""Measure extraction and diagnosis time on hostile outputs of growing size (issue 11 item 5).

    python benchmarks/perf/extraction.py [--sizes 1000,4000,16000] [--out figures.json]

For each hostile input family, the time of ``extract_sql`` + ``diagnose`` (no schema) at each size, and
the growth exponent between the two largest sizes: about 1 is linear, 2 quadratic. Targets are checked
here, never in unit tests: every exponent must stay below 1.5.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

from figures import report  # benchmarks/perf/figures.py, beside this script

from harness.diagnose import diagnose
from harness.diagnose.literals import invented_coordinates
from harness.sql.extract import extract_sql

MAX_EXPONENT = 1.5

# family -> (what it is, builder of an input of size n)
FAMILIES: dict[str, tuple[str, Callable[[int], str]]] = {
    "answer_headers": ("n lines of '答案：' and nothing else", lambda n: "答案：\n" * n),
    "answer_headers_then_sql": ("n '答案：' lines, then a statement", lambda n: "答案：\n" * n + "SELECT 1;"),
    "blank_lines": ("a statement, 10n blank lines, prose", lambda n: "SELECT 1\n" + "\n" * (10 * n) + "以上"),
    "implausible_keywords": ("one line of n 'a SELECT.'", lambda n: "a SELECT. " * n),
    "statements": ("n statements back to back", lambda n: "SELECT 1;" * n),
    "geojson_keys": ("n unclosed GeoJSON coordinate keys",
                     lambda n: "SELECT ST_GeomFromGeoJSON('" + '{"coordinates": [120.5, ' * n),
    "open_constructors": ("n unclosed ST_MakePoint( calls", lambda n: "SELECT " + "ST_MakePoint(" * n),
    "long_number": ("an argument of 10n digits", lambda n: "SELECT ST_MakePoint(" + "1" * (10 * n) + "x"),
}


def run_once(raw: str) -> float:
    started = time.perf_counter()
    extracted = extract_sql(raw)
    diagnose(raw, extracted, "stop", "杭州", "", None)
    invented_coordinates(raw, "杭州", "")
    return time.perf_counter() - started


def measure(sizes: list[int]) -> dict[str, dict[str, object]]:
    figures: dict[str, dict[str, object]] = {}
    for name, (what, build) in FAMILIES.items():
        seconds = {n: round(run_once(build(n)), 4) for n in sizes}
        a, b = sizes[-2], sizes[-1]
        exponent = math.log(max(seconds[b], 1e-4) / max(seconds[a], 1e-4)) / math.log(b / a)
        figures[name] = {"input": what, "seconds": seconds, "growth_exponent": round(exponent, 2),
                         "linear": exponent < MAX_EXPONENT}
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,4000,16000", help="comma-separated input sizes (at least two)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if len(sizes) < 2:
        ap.error("--sizes needs at least two sizes, e.g. 1000,4000")
    figures = measure(sizes)
    report(figures, args.out)
    slow = [name for name, f in figures.items() if not f["linear"]]
    if slow:
        raise SystemExit(f"super-linear (growth exponent >= {MAX_EXPONENT}): {', '.join(slow)}")


if __name__ == "__main__":
    main()
