"""Hostile outputs that once took a minute or more to extract or diagnose (issue 11 item 5).

Each input is sized so that the old quadratic code took well over 30 s on this machine (measured: 6,000
``答案：`` headers 54 s; the GeoJSON and constructor inputs at a tenth of these sizes 0.6 s and 0.6 s, growing
with the square); linear code takes well under a second. The bound is generous so that a loaded CI machine
never fails a correct build, and still far below what the quadratic code needs. Figures for growing sizes:
``python benchmarks/perf/extraction.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.diagnose import diagnose
from harness.diagnose.literals import constructor_coordinates, invented_coordinates
from harness.sql.extract import extract_sql

BOUND_S = 8.0

HOSTILE: dict[str, str] = {
    "6,000 answer headers": "答案：\n" * 6000,
    "6,000 inline answer headers": "### Answer: 答案是 x\n" * 6000,
    "blank lines after a statement": "SELECT 1\n" + "\n" * 150_000 + "以上",
    "one line of implausible keywords": "a SELECT. " * 30_000,
}
HOSTILE_SQL: dict[str, str] = {
    "20,000 unclosed GeoJSON keys": "SELECT ST_GeomFromGeoJSON('" + '{"coordinates": [120.5, ' * 20_000,
    "8,000 unclosed constructors": "SELECT " + "ST_MakePoint(" * 8000,
    "a 200,000-digit argument": "SELECT ST_MakePoint(" + "1" * 200_000 + "x",
    "200,000 spaces in an argument": "SELECT ST_MakePoint(( " + " " * 200_000 + "x",
}


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@pytest.mark.parametrize("name", HOSTILE)
def test_extraction_is_linear(name: str) -> None:
    raw = HOSTILE[name]
    assert _timed(lambda: diagnose(raw, extract_sql(raw), "stop", "", "", None)) < BOUND_S


@pytest.mark.parametrize("name", HOSTILE_SQL)
def test_coordinate_search_is_linear(name: str) -> None:
    sql = HOSTILE_SQL[name]
    assert _timed(lambda: invented_coordinates(sql, "杭州", "")) < BOUND_S


def test_hostile_inputs_still_get_their_answers() -> None:
    """The linear code still finds what there is to find in the same inputs."""
    assert extract_sql("答案：\n" * 6000 + "SELECT 1;").sql == "SELECT 1"
    assert extract_sql("答案：\n" * 6000).sql is None
    got = extract_sql("SELECT 1;" * 3000)
    assert (got.sql, got.note) == ("SELECT 1", "2999 more statements dropped")
    geo = "SELECT ST_GeomFromGeoJSON('" + '{"coordinates": [1.5, ' * 2000 + '{"coordinates": [120.5, 30.5]}\')'
    assert [n for n, _ in constructor_coordinates(geo)] == ["1.5"] * 2000 + ["120.5", "30.5"]
    calls = "SELECT " + "ST_MakePoint(" * 3 + "116.39, 39.91"
    assert [n for n, _ in constructor_coordinates(calls)] == ["116.39", "39.91"]
