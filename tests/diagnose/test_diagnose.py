"""Diagnostics, from the golden cases in cases/diagnose.jsonl, plus properties on arbitrary text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.diagnose import FLAGS, Diagnosis, diagnose
from harness.diagnose.literals import constructor_coordinates, invented_coordinates
from harness.sql.extract import extract_sql
from harness.sql.schema import SchemaCatalog
from tests.golden import jsonl_cases

HERE = Path(__file__).parent / "cases"
CATALOG = SchemaCatalog.from_ddl((HERE / "schema.sql").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", jsonl_cases(HERE / "diagnose.jsonl", ("raw", "finish_reason", "question", "context", "flags")))
def test_diagnose_golden(case: dict[str, Any]) -> None:
    raw = case["raw"]
    got = diagnose(raw, extract_sql(raw), case["finish_reason"], case["question"], case["context"], CATALOG)
    assert list(got.flags) == case["flags"], dict(got.details)
    for flag, text in case.get("details", {}).items():
        assert text in got.details[flag], (flag, got.details)
    for flag, text in case.get("absent_details", {}).items():
        assert text not in got.details.get(flag, ""), (flag, got.details)
    assert set(got.details) == set(got.flags)


def test_seed_loop_is_degenerate_in_the_sql_itself() -> None:
    raw = ("SELECT COUNT(*) FROM rfgcpy WHERE geom AND ssqx AND name AND jsdw AND geom AND ssqx AND name AND jsdw "
           "AND geom AND ssqx AND name AND jsdw AND tya")
    got = diagnose(raw, extract_sql(raw), "length", "", "", None)
    assert got.sql_degenerate
    assert got.flags == ("degenerate", "truncated")  # no catalog: no identifier flags


def test_loop_criterion_stop_is_degenerate() -> None:
    got = diagnose("SELECT name FROM aipoi WHERE", extract_sql("SELECT name FROM aipoi WHERE"), "loop", "", "", CATALOG)
    assert "degenerate" in got.flags and not got.sql_degenerate


@pytest.mark.parametrize("sql, expected", [
    ("ST_MakePoint(116.39, 39.91)", ["116.39", "39.91"]),
    ("ST_SetSRID(ST_Point(120.1, 30.2, 4326), 4326)", ["120.1", "30.2"]),
    ("ST_MakeEnvelope(120, 30, 121, 31, 4490)", ["120", "30", "121", "31"]),
    ("ST_GeogFromText('SRID=4326;POINT(120.1 30.2)')", ["120.1", "30.2"]),
    ("'LINESTRING(120 30, 121 31)'::geometry", ["120", "30", "121", "31"]),
    ("ST_GeomFromGeoJSON('{\"type\":\"Point\",\"coordinates\":[120.5,30.5]}')", ["120.5", "30.5"]),
    ("ST_DWithin(geom, ST_MakePoint(ST_X(g) + 0.01, 30.2), 500)", ["30.2"]),
    ("ST_Buffer(geom, 100)", []),
    ("ST_MakePoint(120.1", ["120.1"]),  # truncated call
])
def test_constructor_coordinates(sql: str, expected: list[str]) -> None:
    assert [n for n, _ in constructor_coordinates(sql)] == expected


def test_numbers_compare_numerically_and_world_bounds_are_not_invented() -> None:
    assert invented_coordinates("ST_MakePoint(120.210, 30.250)", "120.21,30.25", "") == ()
    assert invented_coordinates("ST_MakeEnvelope(-180, -90, 180, 90, 4326)", "", "") == ()
    assert invented_coordinates("ST_MakePoint(-120.5, 30)", "西经120.5度，北纬30度", "") == ()
    assert invented_coordinates("ST_MakePoint(120.5, 30)", "经度１２０.５，纬度３０", "") == ()  # full-width digits


def test_diagnosis_is_frozen() -> None:
    got = diagnose("SELECT 1;", extract_sql("SELECT 1;"), "stop", "", "", None)
    assert got == Diagnosis((), {})
    with pytest.raises(AttributeError):
        got.flags = ("x",)  # type: ignore[misc]


_SQLISH = st.lists(st.sampled_from(
    ["SELECT", "FROM", "rfgcpy", "aipoi", "WHERE", "AND", "geom", "jsdw", "tya", " ", "\n", ";", "'", '"', "(", ")",
     "ST_MakePoint(", "116.39", ",", "'POINT(", "```", "CASE WHEN", "WITH x AS (", "::geography", "--", "$$"]),
    max_size=60).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(st.text(max_size=300), _SQLISH), finish=st.sampled_from(["stop", "length", "loop", "error"]),
       question=st.text(max_size=40))
def test_diagnose_never_raises(raw: str, finish: str, question: str) -> None:
    got = diagnose(raw, extract_sql(raw), finish, question, "", CATALOG)
    assert set(got.flags) <= set(FLAGS)
    assert list(got.flags) == [f for f in FLAGS if f in got.flags]


def test_a_pre_parsed_tree_is_used_for_names_and_truncation() -> None:
    import sqlglot

    raw = "SELECT name FROM rfgcpy WHERE jsdw = 1"
    tree = sqlglot.parse_one("SELECT name FROM rfgcpy WHERE qsdw = 1 AND nope = 2", read="postgres")
    got = diagnose(raw, extract_sql(raw), "stop", "", "", CATALOG, parsed=tree)
    assert got.details.get("unknown_column") == "nope"
    # a caller's tree means the statement parsed: no 'does not parse' truncation
    cut = "SELECT name FROM rfgcpy WHERE"
    assert "truncated" in diagnose(cut, extract_sql(cut), "stop", "", "", CATALOG).flags
    assert "truncated" not in diagnose(cut, extract_sql(cut), "stop", "", "", CATALOG, parsed=tree).flags
