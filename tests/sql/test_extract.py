"""Extraction, from the golden cases in cases/extract.jsonl, plus properties on arbitrary text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sql.extract import Extracted, extract_sql, split_statements
from tests.golden import jsonl_cases

CASES = Path(__file__).parent / "cases" / "extract.jsonl"


@pytest.mark.parametrize("case", jsonl_cases(CASES, ("raw", "sql", "terminated", "had_fence")))
def test_extract_golden(case: dict[str, Any]) -> None:
    got = extract_sql(case["raw"])
    assert (got.sql, got.terminated, got.had_fence) == (case["sql"], case["terminated"], case["had_fence"]), got.note


def test_extracted_is_frozen() -> None:
    got = extract_sql("SELECT 1;")
    with pytest.raises(AttributeError):
        got.sql = "x"  # type: ignore[misc]


def test_note_says_what_was_dropped() -> None:
    got = extract_sql("Here you go:\n```sql\nSELECT 1;\nSELECT 2;\n```")
    assert "fenced" in got.note and "prose before" in got.note and "1 more statement dropped" in got.note


def test_split_statements_respects_literals_and_comments() -> None:
    assert split_statements("SELECT ';'; /* ; */ SELECT 2; -- ;\n") == ["SELECT ';'", "/* ; */ SELECT 2", "-- ;"]


_SQLISH = st.lists(st.sampled_from(
    ["SELECT", "select", "WITH", "FROM", "rfgcpy", " ", "\n", "\n\n", ";", "'", '"', "--", "/*", "*/", "$$", "$a$",
     "```", "```sql", "###", "Answer:", "答案：", "以下是", "(", ")", "E'", "\\", "DROP", "DO", "x", "1.5", "，"]),
    max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), _SQLISH))
def test_extract_never_raises_and_is_consistent(raw: str) -> None:
    got = extract_sql(raw)
    assert isinstance(got, Extracted)
    if got.sql is not None:
        assert got.sql == got.sql.strip() and got.sql
        assert got.sql in raw
