"""Exact match, from the golden cases in cases/exact_match.tsv."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.scoring.exact import clause_differences, exact_match, normalise_sql
from tests.golden import tsv_cases

CASES = Path(__file__).parent / "cases" / "exact_match.tsv"


@pytest.mark.parametrize("gold, prediction, expected, comment", tsv_cases(CASES))
def test_exact_match_golden(gold: str, prediction: str, expected: bool, comment: str) -> None:
    assert exact_match(gold, prediction) is expected, clause_differences(gold, prediction)


@pytest.mark.parametrize("gold, prediction, expected, comment", tsv_cases(CASES))
def test_exact_match_is_reflexive(gold: str, prediction: str, expected: bool, comment: str) -> None:
    assert exact_match(gold, gold)


def test_clause_differences_names_clauses() -> None:
    assert clause_differences("SELECT name FROM aipoi WHERE id = 1 ORDER BY name",
                              "SELECT name FROM aipoi WHERE id = 2 ORDER BY name DESC") == ("where", "order_by")
    assert clause_differences("SELECT 1", "SELECT FROM WHERE") == ("parse",)


def test_unparseable_sql_matches_only_its_own_folded_text() -> None:
    assert exact_match("SELECT FROM WHERE ;", "select  from where")
    assert not exact_match("SELECT FROM WHERE ;", "SELECT 1")
    assert not exact_match("SELECT 1", "SELECT FROM WHERE")
    assert not exact_match("", "")


def test_normalise_sql_for_display() -> None:
    assert normalise_sql('SELECT COUNT(*) AS "数量" FROM RFGCPY;') == "SELECT COUNT(*) AS 数量 FROM rfgcpy"
    assert normalise_sql("SELECT FROM  WHERE ;") == "SELECT FROM WHERE"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_exact_match_never_raises(text: str) -> None:
    assert exact_match("SELECT name FROM rfgcpy", text) in (True, False)


def test_a_gold_parsed_by_the_caller_gives_the_verdict_of_its_text():
    """The scorer hands exact match the gold tree it parsed to execute the gold; the verdict is the one
    the gold's text gives, and the tree is not changed."""
    from harness.scoring.exact import exact_match, parse_statement

    gold = "SELECT name FROM rfgcpy WHERE ssqx = '上城区' AND jgsj > 2000;"
    tree = parse_statement(gold)
    before = tree.sql()
    for pred in ("select R.NAME as 名称 from rfgcpy r where 2000 < r.jgsj and r.ssqx = '上城区'",
                 "SELECT name FROM rfgcpy WHERE ssqx = '西湖区' AND jgsj > 2000"):
        assert exact_match(gold, pred, gold_parsed=tree) == exact_match(gold, pred)
    # the tree given is what is compared (the caller vouches that it is the parse of the text)
    assert exact_match(gold, "SELECT name FROM rfgcpy", gold_parsed=parse_statement("SELECT name FROM rfgcpy"))
    assert tree.sql() == before
