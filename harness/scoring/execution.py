"""Execution match: a pure function of two result sets.

``execution_match`` (strict): rows as multisets (duplicates count); row order matters only when the
gold's outermost query has ORDER BY; column names are ignored; column order is ignored but the number
of columns must be equal; numbers within relative 1e-6; NULL = NULL; geometry topologically.

``superset=True`` is the lenient secondary metric: the prediction may have extra columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.db.executor import ResultSet
from harness.scoring.normalise import candidate_mappings, canonical_value, multiset_equal, sequence_equal


@dataclass(frozen=True)
class Verdict:
    match: bool
    reason: str = ""


def _canonical(rs: ResultSet) -> list[tuple[Any, ...]]:
    return [tuple(canonical_value(v) for v in row) for row in rs.rows]


def execution_match(gold: ResultSet, pred: ResultSet, *, ordered: bool, superset: bool = False) -> Verdict:
    gw, pw = len(gold.columns), len(pred.columns)
    if gold.capped or pred.capped:
        return Verdict(False, "row cap reached: results too large to compare")
    if (pw != gw) if not superset else (pw < gw):
        return Verdict(False, f"{pw} columns, gold has {gw}")
    if len(gold.rows) != len(pred.rows):
        return Verdict(False, f"{len(pred.rows)} rows, gold has {len(gold.rows)}")
    g, p = _canonical(gold), _canonical(pred)
    if gw == 0:
        return Verdict(True)
    compare = sequence_equal if ordered else multiset_equal
    for mapping in candidate_mappings(g, p, gw, pw):
        projected = [tuple(row[j] for j in mapping) for row in p]
        if compare(g, projected):
            return Verdict(True)
    return Verdict(False, "row values differ" + (" (order matters: gold has ORDER BY)" if ordered else ""))


def first_differences(gold: ResultSet, pred: ResultSet, limit: int = 3) -> str:
    """A short human diff of the first rows, for reports and pytest failures."""
    lines = [f"gold columns {list(gold.columns)}, {len(gold.rows)} rows; "
             f"predicted columns {list(pred.columns)}, {len(pred.rows)} rows"]
    for i in range(min(limit, max(len(gold.rows), len(pred.rows)))):
        g = gold.rows[i] if i < len(gold.rows) else "-"
        p = pred.rows[i] if i < len(pred.rows) else "-"
        if g != p:
            lines.append(f"  row {i + 1}: gold {_short(g)} | predicted {_short(p)}")
    return "\n".join(lines)


def _short(row: object) -> str:
    text = str(tuple(str(v) for v in row)) if isinstance(row, tuple) else str(row)
    return text if len(text) < 160 else text[:157] + "..."
