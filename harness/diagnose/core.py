"""One diagnosis per raw output: the flags a reader needs to see why an answer went wrong.

Flags come from a fixed vocabulary (``FLAGS``), each with a detail line:

* ``degenerate``: a loop (``harness.diagnose.loops``) in the extracted SQL or, failing that, in the raw
  output around it. The detail starts with ``sql:`` or ``raw:`` so a caller can tell which; the status
  ``degenerate`` belongs to the first kind only (``Diagnosis.sql_degenerate``).
* ``truncated``: see ``harness.diagnose.truncation``.
* ``unknown_column`` / ``unknown_table``: names the schema lacks (``harness.sql.schema``). A truncated
  statement that does not parse is cut back to its last parseable prefix first, and its final word is
  not reported when it is the start of a known name (``... AND tya`` was ``tyaqpjdj`` cut off).
* ``invented_literal``: coordinates that neither the question nor the context gave
  (``harness.diagnose.literals``).

``no_sql`` is a status, not a flag: it is not produced here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlglot import exp

from harness.diagnose.literals import invented_coordinates
from harness.diagnose.loops import is_degenerate, sql_tokens
from harness.diagnose.truncation import truncation
from harness.scoring.status import DIAGNOSIS_FLAGS
from harness.sql.extract import Extracted
from harness.sql.schema import IdentifierCheck, SchemaCatalog, check_identifiers

__all__ = ["FLAGS", "Diagnosis", "diagnose"]

FLAGS = DIAGNOSIS_FLAGS  # the one flag vocabulary (harness.scoring.status; it adds backend_error)

_MAX_REPAIR_CUTS = 12
_TOKEN_RE = re.compile(r"'(?:[^']|'')*'?|\"[^\"]*\"?|\d+(?:\.\d+)?|\w+|[^\s\w]", re.UNICODE)


@dataclass(frozen=True)
class Diagnosis:
    """Flags (in ``FLAGS`` order) and, for each, one line saying what was found."""

    flags: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def sql_degenerate(self) -> bool:
        """The extracted SQL itself loops (the ``degenerate`` status), not only the text around it."""
        return "degenerate" in self.flags and self.details.get("degenerate", "").startswith("sql:")


def diagnose(raw: str, extracted: Extracted, finish_reason: str, question: str, context: str,
             catalog: SchemaCatalog | None, *, parsed: exp.Expr | None = None) -> Diagnosis:
    """Flags for one output. Pure: no database, no I/O; never raises on any text.

    ``parsed``: ``extracted.sql`` as the caller already parsed it (sqlglot, dialect postgres), so the
    statement is parsed once per item; None when the caller has no tree (it is then parsed here).

    >>> from harness.sql.extract import extract_sql
    >>> cat = SchemaCatalog.from_ddl("CREATE TABLE rfgcpy (id int, name text, ssqx text, tyaqpjdj text, geom geometry);")
    >>> raw = 'SELECT COUNT(*) FROM rfgcpy WHERE geom AND ssqx AND jsdw AND geom AND ssqx AND jsdw AND geom AND ssqx AND jsdw AND tya'
    >>> d = diagnose(raw, extract_sql(raw), "length", "上城区有多少人防工程？", "", cat)
    >>> d.flags
    ('degenerate', 'truncated', 'unknown_column')
    >>> d.details["unknown_column"]
    'jsdw'
    """
    sql = extracted.sql
    details: dict[str, str] = {}

    loop_detail = _degenerate(raw, sql, finish_reason)
    if loop_detail:
        details["degenerate"] = loop_detail

    truncated = truncation(raw, extracted, finish_reason, parses=True if parsed is not None else None,
                           looped=loop_detail is not None)
    if truncated:
        details["truncated"] = truncated

    if sql is not None and catalog is not None:
        check, dropped = _identifiers(sql, catalog, truncated=truncated is not None, parsed=parsed)
        if check.unknown_columns:
            details["unknown_column"] = ", ".join(check.unknown_columns)
        if check.unknown_tables:
            details["unknown_table"] = ", ".join(check.unknown_tables)
        if dropped and truncated:
            details["truncated"] += f"; cut-off name {dropped!r} not reported as unknown"

    if sql is not None:
        invented = invented_coordinates(sql, question, context)
        if invented:
            details["invented_literal"] = (", ".join(invented)
                                           + ": coordinates in a spatial constructor, not in the question or context")

    return Diagnosis(tuple(f for f in FLAGS if f in details), details)


def _degenerate(raw: str, sql: str | None, finish_reason: str) -> str | None:
    if sql:
        loop = is_degenerate(sql)
        if loop is not None:
            return "sql: " + loop.describe(sql_tokens(sql))
    if raw:
        loop = is_degenerate(raw)
        if loop is not None:
            return "raw: " + loop.describe(sql_tokens(raw))
    if finish_reason == "loop":
        return "raw: generation was stopped by the loop criterion"
    return None


def _identifiers(sql: str, catalog: SchemaCatalog, *, truncated: bool,
                 parsed: exp.Expr | None) -> tuple[IdentifierCheck, str | None]:
    """Check names; for truncated SQL, on the longest parseable prefix, minus a cut-off last name."""
    check = check_identifiers(sql, catalog, parsed=parsed)
    if not truncated:
        return check, None
    text = sql
    if check.parse_error is not None:
        text, check = _parseable_prefix(sql, catalog)
    tokens = _TOKEN_RE.findall(text)
    last = tokens[-1].lower() if tokens else ""
    if not last or not (last[0].isalpha() or last[0] == "_"):
        return check, None
    known = set(catalog.tables)
    for table_columns in catalog.tables.values():
        known.update(table_columns or ())
    if last in known or not any(name.startswith(last) for name in known):
        return check, None
    columns = tuple(c for c in check.unknown_columns if c != last)
    tables = tuple(t for t in check.unknown_tables if t != last)
    if (columns, tables) == (check.unknown_columns, check.unknown_tables):
        return check, None
    return IdentifierCheck(tables, columns, check.parse_error), last


def _parseable_prefix(sql: str, catalog: SchemaCatalog) -> tuple[str, IdentifierCheck]:
    starts = [m.start() for m in _TOKEN_RE.finditer(sql)]
    for cut in reversed(starts[-_MAX_REPAIR_CUTS:]):
        prefix = sql[:cut].rstrip()
        if not prefix:
            break
        candidate = prefix + ")" * max(0, _open_parens(prefix))
        check = check_identifiers(candidate, catalog)
        if check.parse_error is None:
            return prefix, check
    return sql, check_identifiers(sql, catalog)


def _open_parens(sql: str) -> int:
    depth = 0
    for token in _TOKEN_RE.findall(sql):
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
    return depth
