"""Classify SQL before it is sent: only a single read-only query is ever executed.

This is the first of several walls (the others: a SELECT-only role, a read-only transaction, one
statement per execution through a server-side cursor, ``statement_timeout``, rollback). It refuses:
anything that is not one SELECT / WITH / VALUES / set operation; data-modifying CTEs; SELECT INTO;
row locks; and calls to server-administration functions that a read-only role could still use against
itself or other sessions (terminating backends, advisory locks, large objects, file access, settings).

>>> classify("SELECT 1").allowed
True
>>> classify("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").reason
'data-modifying statement inside the query (DELETE)'
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

logging.getLogger("sqlglot").setLevel(logging.ERROR)

_READ_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
           exp.TruncateTable, exp.Copy, exp.Set, exp.Transaction, exp.Commit, exp.Rollback, exp.Grant)
_DENIED_FUNCTIONS = re.compile(
    r"^(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_promote|pg_switch_wal"
    r"|pg_(try_)?advisory\w*|pg_read_(binary_)?file|pg_ls_\w+|pg_stat_file|pg_file_\w+|pg_logical_\w+"
    r"|pg_create_\w+|pg_drop_replication_slot|pg_replication_\w+|pg_import_system_collations"
    r"|lo_\w+|loread|lowrite|dblink\w*|set_config|query_to_xml\w*|query_to_xmlschema|cursor_to_xml\w*"
    r"|table_to_xml\w*|database_to_xml\w*|schema_to_xml\w*|pg_notify|txid_current|pg_current_xact_id"
    r"|nextval|setval|currval|pg_sleep_for|pg_sleep_until)$", re.I)
_FIRST_WORD = re.compile(r"^\s*\(*\s*(\w+)", re.S)
# U&"\0070g_advisory_lock" is pg_advisory_lock to the server, but sqlglot reads it as ``U & "..."``,
# so a denied function could hide behind it. No real answer needs an escaped identifier.
_UNICODE_IDENTIFIER = re.compile(r'\bU&"', re.I)


@dataclass(frozen=True)
class Classification:
    allowed: bool
    reason: str = ""


def classify(sql: str) -> Classification:
    text = sql.strip().rstrip(";").strip()
    if not text:
        return Classification(False, "empty statement")
    if _UNICODE_IDENTIFIER.search(_strip_literals(text)):
        return Classification(False, 'unicode-escaped identifiers (U&"...") are not allowed: they can hide a name')
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
        return _classify_tree(statements)
    except (ParseError, TokenError):
        return _classify_unparsed(text)
    except RecursionError:
        # sqlglot's parser and generator recurse per nesting level; thousands of nested parentheses or
        # calls would otherwise crash the whole evaluation. No real answer is nested that deep.
        return Classification(False, "expression nested too deeply to check")


def _classify_tree(statements: list[exp.Expr]) -> Classification:
    if len(statements) != 1:
        return Classification(False, f"{len(statements)} statements; only one query is executed")
    root = statements[0]
    if not isinstance(root, _READ_ROOTS):
        return Classification(False, f"not a query: {root.key.upper()} statements are never executed")
    for node in root.walk():
        if isinstance(node, _WRITES):
            return Classification(False, f"data-modifying statement inside the query ({node.key.upper()})")
        if isinstance(node, exp.Into):
            return Classification(False, "SELECT INTO creates a table")
        if isinstance(node, exp.Lock):
            return Classification(False, "row locks (FOR UPDATE/SHARE) are not allowed")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if name and _DENIED_FUNCTIONS.match(name):
                return Classification(False, f"function {name}() is not allowed in evaluated SQL")
    return Classification(True)


def _classify_unparsed(text: str) -> Classification:
    """sqlglot cannot parse every PostGIS query; fall back to a lexical check and let the server's
    parser (read-only role, extended protocol: one statement) be the judge."""
    m = _FIRST_WORD.match(text)
    first = m.group(1).upper() if m else ""
    if first not in ("SELECT", "WITH", "VALUES", "TABLE"):
        return Classification(False, f"not a query: {first or 'unrecognised'} statements are never executed")
    words = set(re.findall(r"[a-z_]+", _strip_literals(text).lower()))
    for bad in ("insert", "update", "delete", "merge", "truncate", "drop", "alter", "create", "grant", "copy"):
        if bad in words:
            return Classification(False, f"data-modifying keyword {bad.upper()} in a query that could not be parsed")
    for word in words:
        if _DENIED_FUNCTIONS.match(word):
            return Classification(False, f"function {word}() is not allowed in evaluated SQL")
    return Classification(True, "unparsed by sqlglot; executed under the read-only role")


def _strip_literals(text: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", text)
