"""Execution-match rules, from golden cases run against a real PostGIS (one loader, one line a case),
plus pure checks with literal rows."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path

import pytest

from harness.db.executor import ResultSet
from harness.scoring.columns import ColumnSearch
from harness.scoring.execution import canonical_columns, execution_match, first_differences
from harness.scoring.normalise import gold_is_ordered, multiset_equal
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


# --- multisets honour exactly the 1e-6 tolerance (issue 10 item 1) ---------------------------------

def typed(columns, types, rows):
    return ResultSet(tuple(columns), tuple(types), tuple(tuple(r) for r in rows))


@pytest.mark.parametrize("ordered", [False, True])
def test_tolerance_is_the_same_with_and_without_order(ordered):
    gold = typed(["avg"], ["numeric"], [(Decimal("10.005"),)])
    pred = typed(["avg"], ["float8"], [(10.004999999999999,)])
    assert execution_match(gold, pred, ordered=ordered).match


@pytest.mark.parametrize("a,b", [(1.2345, 1.2345000001), (0.00049995, 0.0004999500001), (99995.0, 99995.00001),
                                 (-1.2345, -1.2345000001)])
def test_values_either_side_of_a_rounding_boundary_match(a, b):
    gold = rs(["v", "t"], [(a, "x"), (5, "y")])
    pred = rs(["v", "t"], [(5, "y"), (b, "x")])
    assert execution_match(gold, pred, ordered=False).match


def test_just_outside_the_tolerance_does_not_match():
    assert not execution_match(rs(["v"], [(1.0,), (2.0,)]), rs(["v"], [(2.0,), (1.0000021,)]), ordered=False).match
    assert not execution_match(rs(["v"], [(1e6,)]), rs(["v"], [(1e6 + 1.5,)]), ordered=False).match


def test_rows_that_sorting_cannot_pair_are_paired_by_matching():
    gold = rs(["a", "b"], [(1.0000001, 5.0), (1.0, 6.0)])
    pred = rs(["a", "b"], [(1.0, 5.0000001), (1.0000001, 6.0)])
    assert execution_match(gold, pred, ordered=False).match
    assert not execution_match(gold, rs(["a", "b"], [(1.0, 5.1), (1.0000001, 6.0)]), ordered=False).match


def test_multiset_pairing_is_one_to_one():
    """Two gold rows may both be close to one predicted row; each predicted row pairs once."""
    assert not multiset_equal([(1.0,), (1.0000009,)], [(1.0000001,), (1.5,)])
    assert multiset_equal([(1.0, "a"), (1.0000009, "a")], [(1.0000005, "a"), (1.0000001, "a")])


# --- values of different types never match (issue 11 item 3) ----------------------------------------

@pytest.mark.parametrize("gold_type,gold_value,pred_type,pred_value", [
    ("int8", 5, "jsonb", "5"),
    ("text", "abc", "jsonb", '"abc"'),
    ("int4", None, "jsonb", "null"),
    ("_int4", [1, 2], "jsonb", "[1, 2]"),
    ("bool", True, "json", "true"),
    ("text", "NaN", "numeric", Decimal("NaN")),
    ("text", 'json:{"a": 1}', "jsonb", '{"a": 1}'),
    ("text", "10.0.0.1", "inet", ipaddress.ip_address("10.0.0.1")),
    ("text", "a", "myenum", "a"),
])
def test_values_of_different_types_never_match(gold_type, gold_value, pred_type, pred_value):
    gold = typed(["v"], [gold_type], [(gold_value,)])
    pred = typed(["v"], [pred_type], [(pred_value,)])
    assert not execution_match(gold, pred, ordered=False).match
    assert not execution_match(pred, gold, ordered=False).match


def test_json_compares_by_value():
    text = typed(["j"], ["jsonb"], [('{"b": [1, 2.0], "a": null}',)])
    assert execution_match(text, typed(["j"], ["json"], [('{"a":null, "b":[1.0, 2]}',)]), ordered=False).match
    assert execution_match(text, typed(["j"], ["json"], [({"a": None, "b": [1.0, 2]},)]), ordered=False).match
    assert not execution_match(text, typed(["j"], ["jsonb"], [('{"b": [1, 2.5], "a": null}',)]), ordered=False).match


def test_a_json_array_is_not_an_array_of_json():
    """psycopg names a jsonb[] column by its element type: the list says it is an array."""
    json_array = typed(["j"], ["jsonb"], [('["1", "2"]',)])
    array_of_json = typed(["j"], ["jsonb"], [(['"1"', '"2"'],)])
    assert not execution_match(json_array, array_of_json, ordered=False).match
    assert execution_match(array_of_json, typed(["j"], ["jsonb"], [(['"1"', ' "2" '],)]), ordered=False).match


# --- any value gets a verdict, without unbounded recursion (issue 11 item 4) ------------------------

@pytest.mark.parametrize("depth", [600, 5000, 20_000])
def test_deep_json_gets_a_verdict(depth):
    deep_text = "[" * depth + "]" * depth
    deep_parsed: list = []
    for _ in range(depth - 1):
        deep_parsed = [deep_parsed]
    gold = typed(["j"], ["jsonb"], [(deep_text,)])
    assert execution_match(gold, typed(["j"], ["jsonb"], [(deep_text,)]), ordered=False).match
    shallower = "[" * (depth - 1) + "]" * (depth - 1)
    assert not execution_match(gold, typed(["j"], ["jsonb"], [(shallower,)]), ordered=False).match
    # nested Python values (psycopg's own JSON loader, or anything else) get a verdict too
    for pg_type in ("json", "int4", ""):
        parsed = typed(["j"], [pg_type], [(deep_parsed,)])
        assert execution_match(parsed, parsed, ordered=True).match
        assert not execution_match(gold, parsed, ordered=False).match
        assert first_differences(gold, parsed)


# --- column permutations: polynomial, same semantics (issue 11 item 5) ------------------------------

def wide(width, rows=40, shift=0):
    return rs([f"c{i}" for i in range(width)], [tuple(r * width + i + shift for i in range(width)) for r in range(rows)])


@pytest.mark.parametrize("width", [10, 14])
def test_a_wrong_wide_prediction_tries_no_column_order(width):
    gold, pred = wide(width), wide(width, shift=1)  # every column differs from every gold column
    search = ColumnSearch(canonical_columns(gold), canonical_columns(pred))
    assert list(search) == [] and not search.gave_up
    assert not execution_match(gold, pred, ordered=False).match


@pytest.mark.parametrize("width", [10, 14])
def test_a_permuted_wide_prediction_is_found_with_one_column_order(width):
    gold = wide(width)
    order = list(reversed(range(width)))
    pred = rs([f"c{j}" for j in order], [tuple(row[j] for j in order) for row in gold.rows])
    assert len(list(ColumnSearch(canonical_columns(gold), canonical_columns(pred)))) == 1
    assert execution_match(gold, pred, ordered=True).match


def test_identical_columns_are_tried_in_one_order_only():
    gold = rs([f"c{i}" for i in range(14)], [(1,) * 14] * 5)
    pred = rs([f"c{i}" for i in range(14)], [(1,) * 13 + (2,)] * 5)
    search = ColumnSearch(canonical_columns(gold), canonical_columns(pred))
    assert list(search) == []
    same = ColumnSearch(canonical_columns(gold), canonical_columns(gold))
    assert len(list(same)) == 1


def test_columns_with_equal_multisets_are_told_apart_by_their_pairs():
    """Both columns hold {1, 2, 3}; only one pairing of them reproduces the gold's rows."""
    gold = rs(["a", "b", "c"], [(1, 3, "x"), (2, 1, "y"), (3, 2, "z")])
    pred = rs(["c", "b", "a"], [("z", 2, 3), ("x", 3, 1), ("y", 1, 2)])
    assert execution_match(gold, pred, ordered=False).match
    wrong = rs(["c", "b", "a"], [("x", 1, 2), ("y", 2, 3), ("z", 3, 1)])
    assert not execution_match(gold, wrong, ordered=False).match


def test_superset_maps_gold_columns_into_a_wider_prediction():
    gold = rs(["a", "b"], [(1, "x"), (2, "y")])
    pred = rs(["b", "extra", "a", "more"], [("x", 9, 1, 1), ("y", 9, 2, 2)])
    assert execution_match(gold, pred, ordered=False, superset=True).match
    assert not execution_match(gold, pred, ordered=False).match
