"""Execution match: a pure function of two result sets.

``execution_match`` (strict): rows as multisets (duplicates count); row order matters only when the
gold's outermost query has ORDER BY; column names are ignored; column order is ignored but the number
of columns must be equal; numbers within relative 1e-6; NULL = NULL; geometry topologically; a value
of one type never equals a value of another (``harness.scoring.normalise``).

``superset=True`` is the lenient secondary metric: the prediction may have extra columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.db.executor import ResultSet
from harness.scoring.columns import MAX_ASSIGNMENTS, ColumnSearch
from harness.scoring.normalise import canonical_column, json_text, multiset_equal, sequence_equal


@dataclass(frozen=True)
class Verdict:
    match: bool
    reason: str = ""


def canonical_columns(rs: ResultSet) -> list[list[Any]]:
    """Step 1 for a whole result: one list of canonical values per column, each by its column's type."""
    types = rs.types if len(rs.types) == len(rs.columns) else ("",) * len(rs.columns)
    return [canonical_column([row[i] for row in rs.rows], types[i]) for i in range(len(rs.columns))]


def execution_match(gold: ResultSet, pred: ResultSet, *, ordered: bool, superset: bool = False) -> Verdict:
    gw, pw = len(gold.columns), len(pred.columns)
    if gold.capped or pred.capped:
        return Verdict(False, "row cap reached: results too large to compare")
    if (pw != gw) if not superset else (pw < gw):
        return Verdict(False, f"{pw} columns, gold has {gw}")
    if len(gold.rows) != len(pred.rows):
        return Verdict(False, f"{len(pred.rows)} rows, gold has {len(gold.rows)}")
    if gw == 0:
        return Verdict(True)
    g_cols, p_cols = canonical_columns(gold), canonical_columns(pred)
    g_rows = list(zip(*g_cols, strict=True))
    compare = sequence_equal if ordered else multiset_equal
    if gw == pw and compare(g_rows, list(zip(*p_cols, strict=True))):
        return Verdict(True)  # the columns in the gold's order: the common case, without a search
    search = ColumnSearch(g_cols, p_cols)
    for mapping in search:
        projected = list(zip(*(p_cols[j] for j in mapping), strict=True))
        if compare(g_rows, projected):
            return Verdict(True)
    if search.gave_up:
        return Verdict(False, f"columns too ambiguous to match: gave up after {MAX_ASSIGNMENTS} column orders")
    order = " (order matters: gold has ORDER BY)" if ordered else ""
    missing = next((i for i, c in enumerate(search.candidates) if not c), None)
    if missing is not None and gw > 1:
        return Verdict(False, f"row values differ: no predicted column holds the values of gold column "
                              f"{missing + 1} ({gold.columns[missing]!r}){order}")
    return Verdict(False, "row values differ" + order)


def first_differences(gold: ResultSet, pred: ResultSet, limit: int = 3) -> str:
    """A short human diff of the first rows, for reports and pytest failures."""
    lines = [f"gold columns {list(gold.columns)}, {len(gold.rows)} rows; "
             f"predicted columns {list(pred.columns)}, {len(pred.rows)} rows"]
    for i in range(min(limit, max(len(gold.rows), len(pred.rows)))):
        g = gold.rows[i] if i < len(gold.rows) else "-"
        p = pred.rows[i] if i < len(pred.rows) else "-"
        if _short(g) != _short(p):
            lines.append(f"  row {i + 1}: gold {_short(g)} | predicted {_short(p)}")
    return "\n".join(lines)


def _short(row: object) -> str:
    text = str(tuple(_cell(v) for v in row)) if isinstance(row, tuple) else str(row)
    return text if len(text) < 160 else text[:157] + "..."


def _cell(value: object) -> str:
    """A cell for a diff, never the whole of a huge value; nested values without recursion."""
    text = json_text(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text if len(text) < 60 else text[:57] + "..."
