"""Classify SQL before it is sent: only a single read-only query is ever executed.

This is the first of several walls (the others: a SELECT-only role that may execute only the functions
this guard allows, a read-only transaction, one statement per execution, a fresh session per query, a
wall-clock budget, rollback). The decision comes from the parse tree and the database's catalogue, never
from regular expressions over the text:

- the text is tokenised and parsed by sqlglot; anything it cannot parse is refused (PostGIS operators it
  does not know, such as ``~=`` or ``&&&``, are read as ``=`` for the check only);
- the statement must be one SELECT / WITH / VALUES / set operation, with no data-modifying CTE,
  SELECT INTO or row lock;
- every function call sqlglot finds (``exp.Func``: unknown names as ``exp.Anonymous``, typed functions
  mapped back to the name PostgreSQL sees) must be on the :class:`FunctionPolicy` built from
  ``pg_proc`` for the reader role: executable by it, not volatile (a few harmless volatile functions such
  as ``random()`` excepted), and not one that runs a text argument as a query (``ts_stat``,
  ``query_to_xml``, ...). Without a policy no function may be called;
- ``U&"..."`` identifiers (which can spell any name) and NUL bytes are refused.

>>> classify("SELECT 1").allowed
True
>>> classify("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").reason
'data-modifying statement inside the query (DELETE)'
>>> classify("SELECT setseed(0.5)", functions=FunctionPolicy(frozenset({"random"}))).reason
'function setseed() is not on the allow-list of the reader role (volatile, not executable, or runs a query)'
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

logging.getLogger("sqlglot").setLevel(logging.ERROR)

_READ_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
           exp.TruncateTable, exp.Copy, exp.Set, exp.Transaction, exp.Commit, exp.Rollback, exp.Grant)

# Volatile, but they change nothing outside the current statement: golds use them.
HARMLESS_VOLATILE = frozenset({"random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid"})
# Never allowed, whatever pg_proc says: they run a text argument as a query, allocate transaction ids,
# or change session state (most are volatile as well; listing them keeps the intent independent of how a
# server labels them).
NEVER_ALLOWED = frozenset({
    "ts_stat", "ts_rewrite", "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
    "database_to_xmlschema", "database_to_xml_and_xmlschema", "txid_current", "txid_current_if_assigned",
    "pg_current_xact_id", "pg_current_xact_id_if_assigned", "pg_export_snapshot", "setseed", "nextval",
    "setval", "currval", "lastval", "set_config", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "dblink",
    "dblink_exec", "pg_logical_emit_message", "pg_notify",
    # PostGIS helpers that run DDL or take locks; some overloads are labelled stable, so volatility alone
    # (decided per overload) would let the name through
    "addgeometrycolumn", "dropgeometrycolumn", "dropgeometrytable", "updategeometrysrid",
    "enablelongtransactions", "disablelongtransactions", "postgis_extensions_upgrade", "lockrow",
    "unlockrows", "addauth", "checkauth", "gettransactionid"})
# Grammar that sqlglot renders like a call but PostgreSQL's parser handles itself (no pg_proc entry).
SYNTAX_FORMS = frozenset({
    "cast", "try_cast", "coalesce", "greatest", "least", "nullif", "trim", "row", "array", "grouping",
    "exists", "xmlelement", "xmlforest", "xmlconcat", "xmlparse", "xmlpi", "xmlroot", "xmlserialize",
    "xmlexists", "xmlattributes", "treat", "json_object", "json_array", "json_objectagg", "json_arrayagg",
    "json", "json_scalar", "json_serialize", "json_query", "json_value", "json_exists", "json_table",
    "any", "all", "some", "in", "values", "interval"})

# One routine (one overload) the reader may keep: a function, aggregate or window function that is not
# volatile. Everything else is revoked routine by routine (fixture.py), so a name whose overloads differ
# (PostGIS topology adds a volatile ``geometry(topogeometry)`` beside the ``geometry(text)`` cast every
# WKT literal needs) keeps its safe overloads and loses the volatile one.
SAFE_ROUTINE = """(p.prokind IN ('f', 'a', 'w')
                AND (p.provolatile <> 'v' OR p.proname = ANY(%(harmless)s))
                AND NOT p.proname = ANY(%(never)s))"""
# The guard's allow-list, by name (sqlglot cannot resolve overloads): a name with at least one safe
# routine the role may execute. A volatile overload of such a name is still stopped by its revoke.
CATALOGUE_QUERY = f"""
SELECT p.proname
FROM pg_proc p
GROUP BY p.proname
HAVING bool_or({SAFE_ROUTINE} AND has_function_privilege(%(role)s, p.oid, 'EXECUTE'))
"""
# PostgreSQL operators are runs of these characters (outside strings and comments).
_OPERATOR_CHARS = frozenset("+-*/<>=~!@#%^&|`?")
_SQLGLOT_OPERATORS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||", "->",
                                "->>", "#>", "#>>", "@>", "<@", "&&", "::", "~", "~*", "!~", "!~*", "^", "|",
                                "&", "<->", "?", "?|", "?&", "<<", ">>", "#"})
_CALL_NAME = re.compile(r'^"?([A-Za-z_][A-Za-z0-9_$]*)"?\s*\(')
_PLACEHOLDER = exp.column("_")


@dataclass(frozen=True)
class FunctionPolicy:
    """The functions the reader role may call in one database, by name (as in ``pg_proc.proname``)."""

    allowed: frozenset[str]
    # Every name in pg_proc. A call to a name the database does not have at all (a model's invented
    # ``ST_Sum``) cannot run anything: it is sent, and PostgreSQL's 42883 "function does not exist" makes
    # it an exec_error, which is what it is, rather than a refusal that would count as an unsafe query.
    known: frozenset[str] = frozenset()

    @classmethod
    def from_catalogue(cls, conn: Any, role: str) -> FunctionPolicy:
        """Build from ``pg_proc`` on an open psycopg connection to the database, for ``role``."""
        rows = conn.execute(CATALOGUE_QUERY, {"role": role, **catalogue_parameters()}).fetchall()
        known = conn.execute("SELECT DISTINCT proname FROM pg_proc").fetchall()
        return cls(frozenset(r[0] for r in rows) - NEVER_ALLOWED, frozenset(r[0] for r in known))

    def permits(self, name: str, *, invented: bool = False) -> bool:
        """``invented``: the call is one sqlglot does not know either (``exp.Anonymous``)."""
        if name in self.allowed or name in SYNTAX_FORMS:
            return True
        return invented and bool(self.known) and name not in self.known and name not in NEVER_ALLOWED


NO_FUNCTIONS = FunctionPolicy(frozenset())


def catalogue_parameters() -> dict[str, list[str]]:
    """The query parameters of ``SAFE_ROUTINE``."""
    return {"harmless": sorted(HARMLESS_VOLATILE), "never": sorted(NEVER_ALLOWED)}


@dataclass(frozen=True)
class Classification:
    allowed: bool
    reason: str = ""


def classify(sql: str, *, parsed: exp.Expr | None = None,
             functions: FunctionPolicy = NO_FUNCTIONS) -> Classification:
    """Decide whether ``sql`` may be sent. ``parsed``: the statement already parsed by sqlglot
    (``read="postgres"``) from this same text, so a caller that parses each prediction once need not
    parse it again; ``functions``: what the reader role may call (none when not given)."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        return Classification(False, "empty statement")
    if "\x00" in sql:
        return Classification(False, "the SQL contains a NUL byte: what would run is not what was written")
    try:
        tokens = sqlglot.tokenize(text, read="postgres")
        if _has_unicode_identifier(tokens):
            return Classification(False, 'unicode-escaped identifiers (U&"...") are not allowed: they can hide a name')
        if parsed is not None and _statement_count(tokens) > 1:  # a tree of the first statement only
            return Classification(False, f"{_statement_count(tokens)} statements; only one query is executed")
        statements = [parsed] if parsed is not None else _parse(text, tokens)
        return _classify_tree(statements, functions)
    except (ParseError, TokenError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Classification(False, f"sqlglot cannot parse the query, so it cannot be checked: {first[:160]}")
    except RecursionError:
        # sqlglot's parser and generator recurse per nesting level; thousands of nested parentheses or
        # calls would otherwise crash the whole evaluation. No real answer is nested that deep.
        return Classification(False, "expression nested too deeply to check")


def _has_unicode_identifier(tokens: list[Token]) -> bool:
    """``U&"..."``: the tokenizer (which knows strings, dollar quotes and comments) sees ``U``, ``&`` and
    a quoted identifier back to back."""
    for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if (a.token_type == TokenType.VAR and a.text.upper() == "U" and b.token_type == TokenType.AMP
                and c.token_type == TokenType.IDENTIFIER and a.end + 1 == b.start and b.end + 1 == c.start):
            return True
    return False


def _statement_count(tokens: list[Token]) -> int:
    """Statements as the tokenizer separates them (empty ones between two ``;`` not counted)."""
    count, pending = 0, False
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            count, pending = count + pending, False
        else:
            pending = True
    return count + pending


def _parse(text: str, tokens: list[Token]) -> list[exp.Expr]:
    try:
        return [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except ParseError:
        patched = _neutralise_operators(text, tokens)
        if patched == text:
            raise
        return [s for s in sqlglot.parse(patched, read="postgres") if s is not None]


def _neutralise_operators(text: str, tokens: list[Token]) -> str:
    """Replace each PostgreSQL operator sqlglot does not know (``~=``, ``&&&``, ``&<|``, ``<<|``, ...) by
    ``=`` padded with spaces. Only operator tokens that touch are joined, and a token counts only when its
    source text is its text (so never a string, comment or name); the result is used for the check only,
    never sent.

    >>> _neutralise_operators("SELECT a ~= b", sqlglot.tokenize("SELECT a ~= b", read="postgres"))
    'SELECT a =  b'
    """
    runs: list[list[Token]] = []
    for tok in tokens:
        if not (tok.text and set(tok.text) <= _OPERATOR_CHARS and text[tok.start:tok.end + 1] == tok.text):
            continue
        if runs and runs[-1][-1].end + 1 == tok.start:
            runs[-1].append(tok)
        else:
            runs.append([tok])
    out = list(text)
    for run in runs:
        if "".join(t.text for t in run) not in _SQLGLOT_OPERATORS:
            start, end = run[0].start, run[-1].end
            out[start:end + 1] = list("=" + " " * (end - start))
    return "".join(out)


def _classify_tree(statements: list[exp.Expr], functions: FunctionPolicy) -> Classification:
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
            name = called_name(node)
            if name is not None and not functions.permits(name, invented=isinstance(node, exp.Anonymous)):
                return Classification(False, f"function {name}() is not on the allow-list of the reader role "
                                             "(volatile, not executable, or runs a query)")
    return Classification(True)


def called_name(node: exp.Func) -> str | None:
    """The name PostgreSQL resolves for a call sqlglot parsed, or None for an operator or keyword form
    (``a && b``, ``CURRENT_DATE``). Unquoted names fold to lower case, as the server folds them.

    >>> called_name(sqlglot.parse_one("SELECT STRING_AGG(x, ',')", read="postgres").expressions[0])
    'string_agg'
    """
    if isinstance(node, exp.Anonymous):
        this = node.this
        if isinstance(this, exp.Identifier):
            return this.this if this.quoted else this.this.lower()
        return str(this).lower()
    m = _CALL_NAME.match(_shallow_sql(node))
    return m.group(1).lower() if m else None


def _shallow_sql(node: exp.Func) -> str:
    """Render only the call itself (its arguments replaced by a placeholder), so that nested calls cost
    linear, not quadratic, time."""
    args: dict[str, Any] = {}
    for key, value in node.args.items():
        if isinstance(value, exp.Expr):
            args[key] = _PLACEHOLDER.copy()
        elif isinstance(value, list):
            args[key] = [_PLACEHOLDER.copy() if isinstance(v, exp.Expr) else v for v in value]
        else:
            args[key] = value
    try:
        return type(node)(**args).sql(dialect="postgres")
    except Exception:  # noqa: BLE001 -- a generator that needs real arguments: render the whole call
        return node.sql(dialect="postgres")
