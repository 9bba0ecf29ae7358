"""Execution-match rules, from golden cases run against a real PostGIS (one loader, one line a case),
plus pure checks with literal rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.db.executor import ResultSet
from harness.scoring.execution import execution_match
from harness.scoring.normalise import gold_is_ordered
from tests.golden import tsv_cases

CASES = Path(__file__).parent / "cases" / "execution_match.tsv"


@pytest.mark.parametrize("gold,pred,expected,comment", tsv_cases(CASES))
def test_golden_case(reader, gold, pred, expected, comment):
    g, p = reader.run(gold), reader.run(pred)
    assert g.status == "ok", g
    assert p.status == "ok", p
    verdict = execution_match(g.result, p.result, ordered=gold_is_ordered(gold))
    assert verdict.match is expected, f"{comment}: {verdict.reason}"


def rs(columns, rows):
    return ResultSet(tuple(columns), tuple("int4" for _ in columns), tuple(tuple(r) for r in rows))


def test_superset_is_lenient_about_extra_columns():
    gold = rs(["a"], [(1,), (2,)])
    pred = rs(["x", "a"], [("p", 1), ("q", 2)])
    assert not execution_match(gold, pred, ordered=False).match
    assert execution_match(gold, pred, ordered=False, superset=True).match


def test_capped_results_never_match():
    gold = rs(["a"], [(1,)])
    pred = ResultSet(("a",), ("int4",), ((1,),), capped=True)
    assert not execution_match(gold, pred, ordered=False).match


def test_ordered_compare_with_permuted_columns():
    gold = rs(["a", "b"], [(1, "x"), (2, "y")])
    assert execution_match(gold, rs(["b", "a"], [("x", 1), ("y", 2)]), ordered=True).match
    assert not execution_match(gold, rs(["b", "a"], [("y", 2), ("x", 1)]), ordered=True).match


def test_multiset_with_near_ties():
    gold = rs(["v"], [(1.0000001,), (1.0,), (1.0,)])
    pred = rs(["v"], [(1.0,), (1.0000002,), (1.0,)])
    assert execution_match(gold, pred, ordered=False).match
    assert not execution_match(gold, rs(["v"], [(1.0,), (1.0,), (1.1,)]), ordered=False).match
