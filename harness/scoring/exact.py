"""Exact match: Spider-style per-clause comparison of parsed, normalised SQL.

Execution match says whether a prediction returns the gold's rows; exact match says whether it is the
gold's query, written differently at most in ways that cannot matter. Both parse with sqlglot (dialect
postgres) and are reduced to a ``QueryShape``: one normalised entry per clause, compared clause by
clause.

What does not matter:
  * keyword and identifier case (unquoted identifiers fold to lower case, as PostgreSQL folds them;
    a quoted lower-case identifier equals the unquoted one), whitespace, a trailing ``;``;
  * output aliases (``COUNT(*) AS "数量"``), and whether ORDER BY / GROUP BY name an output alias, an
    ordinal (``ORDER BY 2``) or the expression itself;
  * table aliases: ``t1.col`` where ``t1`` aliases ``rfgcpy`` is ``rfgcpy.col``; in a query with a
    single source an unqualified ``col`` is ``rfgcpy.col`` too; CTE names are renamed by position;
  * the order of SELECT items, of FROM/JOIN sources, of top-level AND-ed conditions in WHERE, HAVING
    and join ON, of the operands of ``=`` / ``<>``, of an IN list, and of UNION / INTERSECT operands;
    ``2000 < x`` is ``x > 2000``;
  * how a number is written (``116.390`` is ``116.39``).
What does: every literal's value, the join kind (inner/left/right/full), the ORDER BY list in order
(with direction and effective NULLS placement), LIMIT, OFFSET, DISTINCT, set operations (recursively),
and where a condition stands (``FROM a JOIN b ON c`` is not ``FROM a, b WHERE c``, as in Spider).

A prediction that does not parse, or holds more than one statement, never matches. Nor does anything
match a gold that sqlglot cannot parse: exact match is a secondary metric, and a sqlglot gap must not
crash an evaluation (execution match still scores the item; a gold that fails to *execute* is the
executor's ``gold_error``).

>>> exact_match("SELECT name FROM rfgcpy WHERE ssqx = '上城区' AND jgsj > 2000;",
...             "select R.NAME as 名称 from rfgcpy r where 2000 < r.jgsj and r.ssqx = '上城区'")
True
>>> exact_match("SELECT name FROM rfgcpy WHERE ssqx = '上城区'", "SELECT name FROM rfgcpy WHERE ssqx = '西湖区'")
False
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from harness.sql.quiet import sqlglot_errors_only

__all__ = ["QueryShape", "exact_match", "clause_differences", "normalise_sql", "parse_statement", "query_shape"]

DIALECT = "postgres"


@dataclass(frozen=True)
class QueryShape:
    """One normalised entry per clause. Tuples are sorted where order does not matter."""

    kind: str = "select"  # select | union | union all | intersect | except ... | other
    with_: tuple[str, ...] = ()
    distinct: str = ""
    select: tuple[str, ...] = ()
    from_: tuple[str, ...] = ()
    join_on: tuple[str, ...] = ()
    where: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    having: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()  # in order
    limit: str = ""
    offset: str = ""
    operands: tuple[str, ...] = ()  # set operations: keys of the operand shapes
    other: str = ""  # statements that are not queries: their normalised text

    def key(self) -> str:
        return repr(self)


def exact_match(gold: str, pred: str, *, parsed: exp.Expr | None = None,
                gold_parsed: exp.Expr | None = None, pred_parses: bool = True) -> bool:
    """True when ``pred`` is ``gold`` clause by clause, after normalisation (see the module docstring).

    ``parsed``: ``pred`` as ``parse_statement`` already parsed it (the pipeline parses each prediction
    once); ``pred_parses=False``: ``parse_statement(pred)`` already gave None, so ``pred`` is not parsed
    again (a looping prediction takes milliseconds to fail). ``gold_parsed``: ``gold`` likewise (the
    scorer parsed it to execute it). Trees are read, never changed. Without ``gold_parsed`` a gold's
    shape is computed once per gold text.
    """
    if parsed is not None:
        pred_shape = _shape_of(parsed)
    else:
        pred_shape = query_shape(pred) if pred_parses else None
    if pred_shape is None:
        return _folded_text(gold) == _folded_text(pred) != ""
    gold_shape = _shape_of(gold_parsed) if gold_parsed is not None else _gold_shape(gold)
    if gold_shape is None:
        # sqlglot cannot parse some PostGIS operators (~=, &&&, |>>): fall back to the text with case,
        # whitespace and a trailing ';' folded, so identical SQL still matches.
        return _folded_text(gold) == _folded_text(pred) != ""
    return gold_shape == pred_shape


def _folded_text(sql: str) -> str:
    return " ".join(sql.strip().rstrip(";").lower().split())


def clause_differences(gold: str, pred: str) -> tuple[str, ...]:
    """Names of the clauses that differ (``('where', 'limit')``); ``('parse',)`` when one does not parse.

    >>> clause_differences("SELECT name FROM aipoi LIMIT 5", "SELECT name, id FROM aipoi LIMIT 10")
    ('select', 'limit')
    """
    gold_shape, pred_shape = query_shape(gold), query_shape(pred)
    if gold_shape is None or pred_shape is None:
        return ("parse",)
    return tuple(f.name.rstrip("_") for f in fields(QueryShape)
                 if getattr(gold_shape, f.name) != getattr(pred_shape, f.name))


def query_shape(sql: str) -> QueryShape | None:
    """The per-clause shape of one statement, or None when it does not parse or is not one statement."""
    tree = parse_statement(sql)
    return None if tree is None else _shape_of(tree)


@lru_cache(maxsize=4096)
def _gold_shape(sql: str) -> QueryShape | None:
    return query_shape(sql)


def _shape_of(tree: exp.Expr) -> QueryShape | None:
    try:
        tree = _prepare(tree)
        return _shape(tree, _Ctx())
    except (SqlglotError, RecursionError, ValueError, TypeError, AttributeError, KeyError):
        return None


def normalise_sql(sql: str) -> str:
    """The query as exact match sees it, for display: identifiers folded, numbers canonical, no ``;``.

    >>> normalise_sql('SELECT COUNT(*) AS "数量" FROM RFGCPY WHERE jgsj > 2000.0;')
    'SELECT COUNT(*) AS 数量 FROM rfgcpy WHERE jgsj > 2000'
    """
    tree = parse_statement(sql)
    if tree is None:
        return _collapse(sql)
    try:
        return _prepare(tree).sql(dialect=DIALECT)
    except (SqlglotError, RecursionError, ValueError):
        return _collapse(sql)


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Ctx:
    ctes: tuple[tuple[str, str], ...] = ()  # CTE name -> canonical name, innermost last
    outer: tuple[tuple[tuple[str, str], ...], ...] = ()  # enclosing scopes' alias maps, innermost first

    def cte(self, name: str) -> str | None:
        for cte_name, canonical in reversed(self.ctes):
            if cte_name == name:
                return canonical
        return None


def parse_statement(sql: str) -> exp.Expr | None:
    """``sql`` parsed by sqlglot (dialect postgres) when it is exactly one statement sqlglot understands;
    None otherwise (no statement, several, a syntax error, or text sqlglot kept as an opaque command).
    The pipeline parses each prediction once with this and hands the tree to the guard, the schema
    check and exact match.

    >>> parse_statement("SELECT 1;").sql()
    'SELECT 1'
    >>> parse_statement("SELECT 1; SELECT 2") is None, parse_statement("SELECT FROM WHERE") is None
    (True, True)
    """
    try:
        with sqlglot_errors_only():
            trees = [t for t in sqlglot.parse(sql, read=DIALECT) if t is not None]
    except (SqlglotError, RecursionError, ValueError):
        return None
    if len(trees) != 1:
        return None
    tree = trees[0]
    if isinstance(tree, exp.Command):
        return None  # sqlglot gave up and kept the text
    return tree


def _prepare(tree: exp.Expr) -> exp.Expr:
    """Steps that apply to the whole tree, in order: fold identifiers, unquote, canonical numbers."""
    tree = normalize_identifiers(tree.copy(), dialect=DIALECT)
    for ident in tree.find_all(exp.Identifier):
        if isinstance(ident.this, str) and ident.this == ident.this.lower():
            ident.set("quoted", False)
    for literal in tree.find_all(exp.Literal):
        if not literal.is_string:
            literal.set("this", _canonical_number(literal.this))
    for func in tree.find_all(exp.Anonymous):
        if isinstance(func.this, str):
            func.set("this", func.this.lower())
    return tree


def _canonical_number(text: str) -> str:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return text
    if not value.is_finite():
        return text
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _shape(node: exp.Expr, ctx: _Ctx) -> QueryShape:
    while isinstance(node, exp.Subquery) and not node.alias:
        node = node.this
    if isinstance(node, exp.SetOperation):
        return _set_shape(node, ctx)
    if isinstance(node, exp.Select):
        return _select_shape(node, ctx)
    return QueryShape(kind="other", other=node.sql(dialect=DIALECT))


def _with(node: exp.Expr, ctx: _Ctx) -> tuple[tuple[str, ...], _Ctx]:
    with_ = node.args.get("with_") or node.args.get("with")
    if not isinstance(with_, exp.With):
        return (), ctx
    keys = []
    for cte in with_.expressions:
        canonical = f"cte{len(ctx.ctes) + 1}"
        inner = _shape(cte.this, ctx)
        ctx = replace(ctx, ctes=ctx.ctes + ((cte.alias_or_name, canonical),))
        columns = ",".join(c.name for c in (cte.args.get("alias").columns if cte.args.get("alias") else []))
        keys.append(f"{canonical}({columns})={'recursive ' if with_.args.get('recursive') else ''}{inner.key()}")
    return tuple(keys), ctx


def _set_shape(node: exp.SetOperation, ctx: _Ctx) -> QueryShape:
    with_keys, ctx = _with(node, ctx)
    op = type(node).__name__.lower()
    if not node.args.get("distinct", True):
        op += " all"
    operands = [_shape(node.left, ctx).key(), _shape(node.right, ctx).key()]
    if not isinstance(node, exp.Except):
        operands.sort()
    order = node.args.get("order")
    return QueryShape(
        kind=op, with_=with_keys, operands=tuple(operands),
        order_by=tuple(_ordered_key(o, {}, (), None, ctx) for o in order.expressions) if order else (),
        limit=_limit_key(node), offset=_offset_key(node),
    )


def _select_shape(select: exp.Select, ctx: _Ctx) -> QueryShape:
    with_keys, ctx = _with(select, ctx)
    joins = select.args.get("joins") or []
    alias_map, source_keys = _sources(select, joins, ctx)
    maps = ((tuple(alias_map.items())),) + ctx.outer
    single = next(iter(alias_map.values())) if len(set(alias_map.values())) == 1 else None
    inner_ctx = replace(ctx, outer=maps)

    def key(node: exp.Expr) -> str:
        return _expr_key(node, maps, single, inner_ctx)

    projections = [p.this if isinstance(p, exp.Alias) else p for p in select.expressions]
    outputs = {p.alias: p.this for p in select.expressions if isinstance(p, exp.Alias) and p.alias}

    def resolved(nodes: Iterator[exp.Expr] | list[exp.Expr]) -> tuple[str, ...]:
        return tuple(sorted(key(_resolve_output(n, outputs, projections)) for n in nodes))

    where, group, having, order = (select.args.get(k) for k in ("where", "group", "having", "order"))
    return QueryShape(
        kind="select",
        with_=with_keys,
        distinct=_distinct_key(select, key),
        select=tuple(sorted(key(p) for p in projections)),
        from_=tuple(sorted(f"{k}: {s}" for k, s in source_keys)),
        join_on=_join_on_keys(joins, key),
        where=tuple(sorted(key(c) for c in _conjuncts(where.this))) if where is not None else (),
        group_by=resolved(group.expressions) if group is not None else (),
        having=resolved(_conjuncts(having.this)) if having is not None else (),
        order_by=tuple(_ordered_key(o, outputs, projections, key, inner_ctx) for o in order.expressions)
        if order is not None else (),
        limit=_limit_key(select),
        offset=_offset_key(select),
    )


def _sources(select: exp.Select, joins: list[exp.Join],
             ctx: _Ctx) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """This scope's FROM/JOIN sources: alias -> canonical name, and one (join kind, key) per source."""
    sources: list[tuple[str, exp.Expr]] = []
    from_ = select.args.get("from_") or select.args.get("from")
    if from_ is not None:
        sources.append(("inner", from_.this))
    sources += [(_join_kind(join), join.this) for join in joins]
    alias_map: dict[str, str] = {}
    seen: dict[str, int] = {}
    source_keys: list[tuple[str, str]] = []
    unnamed = 0
    for kind, source in sources:
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
            base = _table_base(source, ctx)
            seen[base] = seen.get(base, 0) + 1
            canonical = base if seen[base] == 1 else f"{base}#{seen[base]}"
            source_keys.append((kind, base))
        else:
            unnamed += 1
            canonical, source_key = _derived_source(source, unnamed, ctx)
            source_keys.append((kind, source_key))
        alias_map[source.alias_or_name or canonical] = canonical
        if isinstance(source, exp.Table) and source.name and not source.alias:
            alias_map.setdefault(source.name, canonical)
    return alias_map, source_keys


def _table_base(table: exp.Table, ctx: _Ctx) -> str:
    """A table's canonical name: schema-qualified unless public; a CTE by its position."""
    name = table.name
    db = table.db if table.db and table.db != "public" else ""
    cte = None if db else ctx.cte(name)
    return cte or (f"{db}.{name}" if db else name)


def _derived_source(source: exp.Expr, number: int, ctx: _Ctx) -> tuple[str, str]:
    """(canonical name, key) of a subquery or table function in FROM/JOIN."""
    if isinstance(source, exp.Subquery):
        columns = ",".join(c.name for c in source.args["alias"].columns) if source.args.get("alias") else ""
        lateral = "lateral " if source.args.get("lateral") else ""
        return f"subquery#{number}", f"{lateral}({columns})" + _shape(source.this, _Ctx(ctx.ctes, ctx.outer)).key()
    stripped = source.copy()
    if stripped.args.get("alias") is not None:
        cols = stripped.args["alias"].columns
        stripped.set("alias", exp.TableAlias(columns=cols) if cols else None)
    return f"source#{number}", stripped.sql(dialect=DIALECT)


def _join_on_keys(joins: list[exp.Join], key: Callable[[exp.Expr], str]) -> tuple[str, ...]:
    join_on: list[str] = []
    for join in joins:
        kind = _join_kind(join)
        on = join.args.get("on")
        if on is not None:
            join_on.extend(f"{kind}: {key(c)}" for c in _conjuncts(on))
        using = join.args.get("using")
        if using:
            join_on.append(f"{kind}: using(" + ",".join(sorted(u.name for u in using)) + ")")
    return tuple(sorted(join_on))


def _distinct_key(select: exp.Select, key: Callable[[exp.Expr], str]) -> str:
    distinct = select.args.get("distinct")
    if distinct is None:
        return ""
    on = distinct.args.get("on")
    return "distinct" + (f" on {key(on)}" if on is not None else "")


def _join_kind(join: exp.Join) -> str:
    side = (join.side or "").lower()
    kind = (join.kind or "").lower()
    if join.args.get("method"):
        return str(join.args["method"]).lower()  # natural
    if side:
        return side
    if kind in ("", "inner", "cross"):
        return "inner"
    return kind


def _conjuncts(node: exp.Expr) -> Iterator[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _resolve_output(node: exp.Expr, outputs: dict[str, exp.Expr],
                    projections: list[exp.Expr]) -> exp.Expr:
    """An output alias or an ordinal in ORDER BY / GROUP BY / HAVING -> the projected expression."""
    if isinstance(node, exp.Column) and not node.table and node.name in outputs:
        target = outputs[node.name]
        if not (isinstance(target, exp.Column) and target.name == node.name):
            return target
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        index = int(node.this) - 1
        if 0 <= index < len(projections):
            return projections[index]
    if outputs and not isinstance(node, exp.Column):
        node = node.copy()
        for column in list(node.find_all(exp.Column)):
            if not column.table and column.name in outputs:
                target = outputs[column.name]
                if not (isinstance(target, exp.Column) and target.name == column.name):
                    column.replace(target.copy())
    return node


def _ordered_key(ordered: exp.Expr, outputs: dict[str, exp.Expr], projections,
                 key, ctx: _Ctx) -> str:
    desc = bool(ordered.args.get("desc")) if isinstance(ordered, exp.Ordered) else False
    inner = ordered.this if isinstance(ordered, exp.Ordered) else ordered
    nulls_first = ordered.args.get("nulls_first") if isinstance(ordered, exp.Ordered) else None
    # PostgreSQL: NULLS LAST for ASC, NULLS FIRST for DESC unless said otherwise. sqlglot records
    # nulls_first=False for a plain ASC, so only an explicit clause in the text can change it.
    explicit = isinstance(ordered, exp.Ordered) and re.search(r"\bnulls\s+(first|last)\b",
                                                               ordered.sql(dialect=DIALECT), re.I)
    if not explicit or nulls_first is None:
        nulls_first = desc
    resolved = _resolve_output(inner, outputs, projections) if projections else inner
    text = key(resolved) if key is not None else _expr_key(resolved, (), None, ctx)
    return f"{text} {'desc' if desc else 'asc'} nulls {'first' if nulls_first else 'last'}"


def _limit_key(node: exp.Expr) -> str:
    limit = node.args.get("limit")
    if limit is None:
        return ""
    value = limit.args.get("expression") or limit.args.get("count")
    return value.sql(dialect=DIALECT) if value is not None else limit.sql(dialect=DIALECT)


def _offset_key(node: exp.Expr) -> str:
    offset = node.args.get("offset")
    if offset is None:
        return ""
    value = offset.args.get("expression")
    return value.sql(dialect=DIALECT) if value is not None else offset.sql(dialect=DIALECT)


def _expr_key(node: exp.Expr, maps: tuple[tuple[tuple[str, str], ...], ...], single: str | None,
              ctx: _Ctx) -> str:
    node = node.copy()
    while isinstance(node, exp.Paren):
        node = node.this
    node = _inline_subqueries(node, ctx)
    if isinstance(node, (exp.Select, exp.SetOperation)):
        return _shape(node, ctx).key()
    _qualify_columns(node, maps, single)
    return _order_operands(node).sql(dialect=DIALECT)


def _inline_subqueries(node: exp.Expr, ctx: _Ctx) -> exp.Expr:
    """Nested queries, outermost first, become placeholders holding their shape."""
    while True:
        sub = next((s for s in node.find_all(exp.Select, exp.SetOperation) if s is not node), None)
        if sub is None:
            return node
        placeholder = exp.Anonymous(this="__query", expressions=[exp.Literal.string(_shape(sub, ctx).key())])
        if sub.parent is None:
            return placeholder
        sub.replace(placeholder)


def _qualify_columns(node: exp.Expr, maps: tuple[tuple[tuple[str, str], ...], ...], single: str | None) -> None:
    """``t1.col`` -> ``canonical.col`` through the alias maps; a bare ``col`` -> ``single.col``."""
    for column in list(node.find_all(exp.Column)):
        table = column.table
        if not table:
            if single is not None and not isinstance(column.this, exp.Star):
                column.set("table", exp.to_identifier(single))
            continue
        resolved = next((dict(scope)[table] for scope in maps if table in dict(scope)), None)
        if resolved is not None:
            column.set("table", exp.to_identifier(resolved))
            column.set("db", None)
            column.set("catalog", None)


def _order_operands(node: exp.Expr) -> exp.Expr:
    """Operands whose order cannot matter in a canonical order: ``=``/``<>`` sides, IN lists; a literal
    on the left of ``<`` moves right (``2000 < x`` is ``x > 2000``)."""
    for comparison in list(node.find_all(exp.EQ, exp.NEQ)):
        left, right = comparison.left, comparison.right
        if left.sql(dialect=DIALECT) > right.sql(dialect=DIALECT):
            comparison.set("this", right.copy())
            comparison.set("expression", left.copy())
    for comparison in list(node.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE)):
        if isinstance(comparison.left, exp.Literal) and not isinstance(comparison.right, exp.Literal):
            flipped = _FLIP[type(comparison)](this=comparison.right.copy(), expression=comparison.left.copy())
            if comparison is node:
                node = flipped
            else:
                comparison.replace(flipped)
    for in_ in list(node.find_all(exp.In)):
        items = in_.expressions
        if items:
            in_.set("expressions", sorted((i.copy() for i in items), key=lambda i: i.sql(dialect=DIALECT)))
    return node


_FLIP: dict[type[exp.Expr], type[exp.Expr]] = {
    exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE,
}


def _collapse(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip().rstrip(";").strip()
