"""Schema checks: which tables and columns a predicted query names that the benchmark does not have.

The catalog comes from the benchmark's DDL text; the check resolves a query's references with
sqlglot's scope analysis, before anything is executed. It is built to miss rather than to accuse:
a reference is reported only when every source it could come from is known and none has it. So
references through ``SELECT *`` subqueries, table functions (``generate_series``, ``unnest``,
``ST_Dump``), views of unknown shape, system catalogs and outer scopes are given the benefit of the
doubt.

>>> cat = SchemaCatalog.from_ddl("CREATE TABLE rfgcpy (id int, name text, jsskwsd text, geom geometry);")
>>> check_identifiers("SELECT count(*) AS \\"数量\\" FROM rfgcpy r WHERE r.jsdw IS NOT NULL", cat)
IdentifierCheck(unknown_tables=(), unknown_columns=('jsdw',), parse_error=None)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from harness.sql.extract import split_statements
from harness.sql.quiet import sqlglot_errors_only
from harness.sql.scanner import top_level

__all__ = ["SchemaCatalog", "SchemaParseError", "IdentifierCheck", "check_identifiers", "parse_error"]

DIALECT = "postgres"
# sqlglot >= 30 has a common base ``Expr`` (``Query`` is not an ``Expression`` there); older ones do not.
_EXPR: type = getattr(exp, "Expr", exp.Expression)

# Tables every PostGIS database has; their columns are not checked.
_BUILTIN_TABLES = frozenset({
    "spatial_ref_sys", "geometry_columns", "geography_columns", "raster_columns", "raster_overviews",
})
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "topology", "tiger"})


class SchemaParseError(ValueError):
    """A CREATE TABLE statement of the benchmark DDL could not be parsed."""


@dataclass(frozen=True)
class SchemaCatalog:
    """Tables of one database -> their column names (lower-cased).

    ``tables`` is keyed by the bare table name; ``qualified`` by ``schema.table`` where the DDL named a
    schema. A table whose columns could not be determined (a view over ``*``, ``CREATE TABLE ... AS``
    with unnamed expressions) maps to None: any column of it is accepted.
    """

    tables: Mapping[str, frozenset[str] | None] = field(default_factory=dict, hash=False)
    qualified: Mapping[str, frozenset[str] | None] = field(default_factory=dict, hash=False)

    @classmethod
    def from_ddl(cls, ddl: str) -> SchemaCatalog:
        """Read CREATE TABLE / CREATE VIEW / ALTER TABLE ... ADD COLUMN; ignore everything else.

        >>> sorted(SchemaCatalog.from_ddl('''CREATE EXTENSION IF NOT EXISTS postgis;
        ... CREATE TABLE public.gxssln (id serial PRIMARY KEY, "Name" text, geom geometry(LineString, 4326));
        ... COMMENT ON TABLE gxssln IS '长输管线';''').columns("gxssln"))
        ['geom', 'id', 'name']
        """
        tables: dict[str, frozenset[str] | None] = {}
        qualified: dict[str, frozenset[str] | None] = {}
        for number, statement in enumerate(split_statements(ddl), start=1):
            head = _strip_leading_comments(statement)
            if not re.match(r"(?is)(create\s+(or\s+replace\s+)?((global|local)\s+)?(temp|temporary|unlogged\s+)?\s*"
                            r"(table|view|materialized\s+view)\b|alter\s+table\b)", head):
                continue
            try:
                tree = _parse_quietly(head)
                if isinstance(tree, exp.Command):
                    raise SqlglotError("sqlglot does not understand this statement")
            except SqlglotError as err:
                raise SchemaParseError(
                    f"DDL statement {number} could not be parsed ({_first_line(err)}): {head[:120]!r}. "
                    "Hint: the schema check needs every CREATE TABLE; simplify the statement or report "
                    "the sqlglot gap.") from err
            if isinstance(tree, exp.Create):
                _add_create(tree, tables, qualified)
            elif isinstance(tree, exp.Alter):
                _add_alter(tree, tables, qualified)
        return cls(MappingProxyType(tables), MappingProxyType(qualified))

    def has_table(self, name: str, db: str = "") -> bool:
        return self.lookup(name, db) is not _MISSING

    def columns(self, name: str, db: str = "") -> frozenset[str] | None:
        """Columns of a table (None: unknown shape). Raises KeyError for an unknown table."""
        found = self.lookup(name, db)
        if found is _MISSING:
            raise KeyError(name)
        return found  # type: ignore[return-value]

    def lookup(self, name: str, db: str = "") -> frozenset[str] | None | object:
        name, db = name.lower(), db.lower()
        if db and f"{db}.{name}" in self.qualified:
            return self.qualified[f"{db}.{name}"]
        if name in self.tables:
            return self.tables[name]
        return _MISSING


_MISSING = object()


@dataclass(frozen=True)
class IdentifierCheck:
    """Names a query uses that the schema lacks. Empty tuples when all resolve or the query is unsure."""

    unknown_tables: tuple[str, ...]
    unknown_columns: tuple[str, ...]
    parse_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.unknown_tables and not self.unknown_columns and self.parse_error is None


def check_identifiers(sql: str, catalog: SchemaCatalog, *, parsed: exp.Expr | None = None) -> IdentifierCheck:
    """Tables and columns in ``sql`` that ``catalog`` does not have, in order of first use.

    A qualified ``t.col`` must exist in the table ``t`` stands for; an unqualified ``col`` in at least
    one source in scope (or an enclosing scope), or be an output alias. Quoted Chinese aliases, ``*``,
    casts to geometry/geography and function names are not column references.

    ``parsed``: the statement as the caller already parsed it (sqlglot, dialect postgres), so a
    prediction is parsed once per item; ``sql`` is then not parsed again. The check reads the tree
    and never changes it.

    >>> cat = SchemaCatalog.from_ddl("CREATE TABLE aipoi (id int, name text, geom geometry);")
    >>> check_identifiers("SELECT p.name FROM aipoi p JOIN hospital h ON ST_DWithin(p.geom, h.geom, 1)", cat)
    IdentifierCheck(unknown_tables=('hospital',), unknown_columns=(), parse_error=None)
    >>> tree = sqlglot.parse_one("SELECT jsdw FROM aipoi", read="postgres")
    >>> check_identifiers("SELECT jsdw FROM aipoi", cat, parsed=tree).unknown_columns
    ('jsdw',)
    """
    if parsed is not None:
        trees = [parsed]
    else:
        try:
            trees = [t for t in _parse_all(sql) if t is not None]
        except SqlglotError as err:
            return IdentifierCheck((), (), _first_line(err))
        except RecursionError:
            return IdentifierCheck((), (), "query nested too deeply to parse")
    if not trees:
        return IdentifierCheck((), (), "no statement")
    unknown_tables: dict[str, None] = {}
    unknown_columns: dict[str, None] = {}
    for tree in trees:
        try:
            scopes = traverse_scope(tree)
        except (SqlglotError, RecursionError, KeyError, AttributeError, TypeError, ValueError):
            continue  # scope analysis gave up: unsure, flag nothing
        for scope in scopes:
            _check_scope(scope, catalog, unknown_tables, unknown_columns)
    return IdentifierCheck(tuple(unknown_tables), tuple(unknown_columns), None)


def parse_error(sql: str) -> str | None:
    """Why sqlglot (dialect postgres) cannot parse ``sql``, or None when it can.

    >>> parse_error("SELECT name FROM rfgcpy WHERE") is None
    False
    """
    try:
        trees = [t for t in _parse_all(sql) if t is not None]
    except SqlglotError as err:
        return _first_line(err)
    except RecursionError:
        return "query nested too deeply to parse"
    return None if trees else "no statement"


# --------------------------------------------------------------------------- internals


def _check_scope(scope: Scope, catalog: SchemaCatalog, unknown_tables: dict[str, None],
                 unknown_columns: dict[str, None]) -> None:
    cte_names = _cte_names(scope)
    for source in scope.sources.values():
        if isinstance(source, exp.Table) and _is_real_table(source, cte_names):
            if not _table_known(source, catalog):
                unknown_tables[_table_display(source)] = None

    outputs = _output_aliases(scope.expression)
    for column in scope.columns:
        name = column.name
        if not name or isinstance(column.this, exp.Star):
            continue
        if column.find_ancestor(exp.Select, exp.SetOperation) is not scope.expression:
            continue  # sqlglot lists some columns of nested queries here too; their own scope checks them
        if _column_unknown(scope, column, catalog, cte_names, outputs):
            unknown_columns[name.lower()] = None


def _column_unknown(scope: Scope, column: exp.Column, catalog: SchemaCatalog, cte_names: set[str],
                    outputs: set[str]) -> bool:
    """Is ``column`` (of this scope's own query) surely absent from every source it could come from?"""
    key = column.name.lower()
    if column.table:
        return _qualified_has(scope, column.table, key, catalog, cte_names) is False
    if key in outputs and not _in_projection(column, scope.expression):
        return False  # ORDER BY / GROUP BY / HAVING on an output alias
    return _unqualified_has(scope, key, catalog) is False


def _qualified_has(scope: Scope | None, alias: str, col: str, catalog: SchemaCatalog,
                   cte_names: set[str]) -> bool | None:
    """True/False when ``alias.col`` resolves/does not; None when unsure (alias not found, opaque source)."""
    while scope is not None:
        if alias in scope.sources:
            return _source_has(scope.sources[alias], col, catalog, _cte_names(scope))
        lowered = {k.lower(): v for k, v in scope.sources.items()}
        if alias.lower() in lowered:
            return _source_has(lowered[alias.lower()], col, catalog, _cte_names(scope))
        scope = scope.parent
    return None


def _unqualified_has(scope: Scope | None, col: str, catalog: SchemaCatalog) -> bool | None:
    saw_source = False
    while scope is not None:
        for alias, source in scope.sources.items():
            saw_source = True
            if alias.lower() == col:
                return True  # whole-row reference: SELECT t FROM t
            verdict = _source_has(source, col, catalog, _cte_names(scope))
            if verdict is not False:
                return verdict if verdict else None
        if _has_opaque_from(scope):
            return None
        scope = scope.parent
    return False if saw_source else None


def _source_has(source: object, col: str, catalog: SchemaCatalog, cte_names: set[str]) -> bool | None:
    if isinstance(source, exp.Table):
        if not _is_real_table(source, cte_names):
            return None
        found = catalog.lookup(source.name, source.db)
        if found is _MISSING or found is None:
            return None  # unknown table is reported as such; opaque table accepts anything
        return col in found  # type: ignore[operator]
    if isinstance(source, Scope):
        expression = source.expression
        if isinstance(expression, (exp.Select, exp.SetOperation)):
            if _has_star(expression):
                return None
            column_aliases = _alias_columns(source)
            if column_aliases is not None:
                return col in column_aliases
            names = {n.lower() for n in _named_selects(expression)}
            if col in names:
                return True
            # PostgreSQL names an unaliased expression itself (count, st_astext, ?column?): unsure then
            return False if _all_named(expression) else None
        return None  # table functions, VALUES, UNNEST: unsure
    return None


def _has_opaque_from(scope: Scope) -> bool:
    """FROM items that are not tables or subqueries (function calls, VALUES): their columns are unknown."""
    select = scope.expression
    if not isinstance(select, exp.Select):
        return False
    items: list[exp.Expr] = []
    if select.args.get("from_") is not None:
        items.append(select.args["from_"].this)
    elif select.args.get("from") is not None:
        items.append(select.args["from"].this)
    items.extend(j.this for j in select.args.get("joins") or [])
    for item in items:
        if isinstance(item, exp.Table) and isinstance(item.this, exp.Identifier):
            continue
        if isinstance(item, exp.Subquery):
            continue
        return True
    return bool(select.args.get("laterals"))


def _alias_columns(source: Scope) -> set[str] | None:
    """Column aliases given to a derived table or CTE: ``(SELECT ...) AS s(a, b)``, ``WITH c(a, b) AS``."""
    parent = source.expression.parent
    alias = parent.args.get("alias") if parent is not None else None
    if isinstance(alias, exp.TableAlias) and alias.columns:
        return {c.name.lower() for c in alias.columns}
    return None


def _output_aliases(expression: exp.Expr) -> set[str]:
    if not isinstance(expression, exp.Select):
        return set()
    return {p.alias.lower() for p in expression.expressions if isinstance(p, exp.Alias) and p.alias}


def _in_projection(node: exp.Expr, select: exp.Expr) -> bool:
    child, parent = node, node.parent
    while parent is not None and parent is not select:
        child, parent = parent, parent.parent
    return parent is select and child.arg_key == "expressions"


def _named_selects(expression: exp.Expr) -> list[str]:
    try:
        return list(expression.named_selects)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return []


def _all_named(expression: exp.Expr) -> bool:
    if isinstance(expression, exp.SetOperation):
        return _all_named(expression.left)
    if not isinstance(expression, exp.Select):
        return False
    return all(isinstance(p, (exp.Alias, exp.Column)) for p in expression.expressions)


def _has_star(expression: exp.Expr) -> bool:
    if isinstance(expression, exp.SetOperation):
        return _has_star(expression.left) or _has_star(expression.right)
    if not isinstance(expression, exp.Select):
        return True
    for projection in expression.expressions:
        if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column)
                                                and isinstance(projection.this, exp.Star)):
            return True
    return False


def _cte_names(scope: Scope) -> set[str]:
    names: set[str] = set()
    node: exp.Expr | None = scope.expression
    while node is not None:
        with_ = node.args.get("with_") or node.args.get("with") if isinstance(node, _EXPR) else None
        if isinstance(with_, exp.With):
            names.update(cte.alias_or_name.lower() for cte in with_.expressions)
        node = node.parent
    return names


def _is_real_table(table: exp.Table, cte_names: set[str]) -> bool:
    if not isinstance(table.this, exp.Identifier):
        return False  # a table function: generate_series(...), unnest(...)
    return not (not table.db and table.name.lower() in cte_names)


def _table_known(table: exp.Table, catalog: SchemaCatalog) -> bool:
    name, db = table.name.lower(), table.db.lower()
    if catalog.has_table(name, db):
        return True
    if db in _SYSTEM_SCHEMAS or name in _BUILTIN_TABLES or name.startswith("pg_"):
        return True
    return False


def _table_display(table: exp.Table) -> str:
    return f"{table.db.lower()}.{table.name.lower()}" if table.db else table.name.lower()


def _add_create(tree: exp.Create, tables: dict[str, frozenset[str] | None],
                qualified: dict[str, frozenset[str] | None]) -> None:
    target = tree.this
    columns: frozenset[str] | None
    if isinstance(target, exp.Schema):
        table = target.this
        defs = [c for c in target.expressions if isinstance(c, exp.ColumnDef)]
        columns = frozenset(c.name.lower() for c in defs)
        if tree.expression is not None and not defs:  # CREATE TABLE t (a, b) AS SELECT ...
            columns = frozenset(i.name.lower() for i in target.expressions if isinstance(i, exp.Identifier))
        if any(isinstance(c, exp.LikeProperty) for c in target.expressions):
            columns = None
    elif isinstance(target, exp.Table):
        table = target
        query = tree.expression
        columns = None
        if isinstance(query, (exp.Select, exp.SetOperation)) and not _has_star(query):
            names = [n for n in _named_selects(query) if n]
            if names and len(names) == len(query.selects):  # type: ignore[attr-defined]
                columns = frozenset(n.lower() for n in names)
    else:
        return
    if not isinstance(table, exp.Table):
        return
    _register(table, columns, tables, qualified)


def _add_alter(tree: exp.Alter, tables: dict[str, frozenset[str] | None],
               qualified: dict[str, frozenset[str] | None]) -> None:
    table = tree.this
    if not isinstance(table, exp.Table):
        return
    key = table.name.lower()
    current = tables.get(key)
    if current is None:
        return
    added = {a.name.lower() for a in tree.args.get("actions") or [] if isinstance(a, exp.ColumnDef)}
    if added:
        _register(table, current | added, tables, qualified)


def _register(table: exp.Table, columns: frozenset[str] | None, tables: dict[str, frozenset[str] | None],
              qualified: dict[str, frozenset[str] | None]) -> None:
    name = table.name.lower()
    tables[name] = columns
    if table.db:
        qualified[f"{table.db.lower()}.{name}"] = columns


def _parse_all(sql: str) -> list[exp.Expr | None]:
    with sqlglot_errors_only():
        return sqlglot.parse(sql, read=DIALECT)


def _parse_quietly(sql: str) -> exp.Expr:
    trees = [t for t in _parse_all(sql) if t is not None]
    if len(trees) != 1:
        raise SqlglotError(f"expected one statement, got {len(trees)}")
    return trees[0]


def _strip_leading_comments(sql: str) -> str:
    """``sql`` from its first character outside whitespace and comments (nested ones too)."""
    return sql[next(top_level(sql, r"\S"), len(sql)):]


def _first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__
