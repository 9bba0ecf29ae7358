"""Schema-grounding examples: more question shapes for fine-tuning, written from the DDL alone.

A benchmark's train split covers its tables through a fixed set of templates (the bundled one: 70), and a
small model learns those templates rather than the schema: on unseen test templates it re-uses a train
template's filter instead of reading the column comments (docs/case-study.md). These examples tie each
column's comment to the column by the simplest idioms over that one table (count, list, equality on a value
the comment or the train golds name, null tests, aggregates, top-k, dates, group by, distinct), each
optionally narrowed by one equality filter on another column, in a few Chinese wordings.

What they are built from: the ``CREATE TABLE`` statements in the training questions' contexts, their
comments (trailing ``-- …`` or ``COMMENT ON``), and the literals the train golds compare columns with.
Nothing is read from the splits being scored except, through ``exclude``, their gold SQL: an example whose
masked query has a scored gold's shape (exact match's shape: aliases and the order of AND-ed conditions do
not count) is dropped, so the splits stay template-disjoint from what is trained on, as the benchmark's own
generator keeps them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from harness.benchmark.model import Question

SOURCE = "schema-augment"
_CREATE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) \([ \t]*(?:--[ \t]*([^\n]*))?\n(.*?)\n\);", re.S)
_COLUMN = re.compile(r"^\s+(\w+) (.+?),?\s*(?:--\s*(.*))?$")
_COMMENT_ON = re.compile(r"COMMENT ON (?:TABLE (\w+)|COLUMN (\w+)\.(\w+)) IS '((?:[^']|'')*)';")
_CONSTRAINTS = {"PRIMARY", "CONSTRAINT", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE"}
_EQUALS = re.compile(r"\b(\w+) = '([^']+)'")
_NUMBER = ("integer", "numeric", "int", "bigint", "smallint", "real", "double")
_TEXT = ("varchar", "text", "char")
MAX_CATEGORIES = 20  # more distinct values than this: a name or a code, not a category
MAX_VALUES = 4  # equality questions per column: its first values (the comment's, then the train golds')


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str

    @property
    def label(self) -> str:
        """The comment's name for the column: ``管材：钢管、PE管`` -> ``管材``, ``设计压力（MPa），可能为空`` -> ``设计压力``."""
        return re.split(r"[，：（(,]", self.comment, maxsplit=1)[0].strip()

    @property
    def listed_values(self) -> tuple[str, ...]:
        """Values the comment lists: ``管材：钢管、PE管`` or ``区县名称，如 上城区、西湖区``."""
        m = re.search(r"(?:：|如\s*)([^，（]+)", self.comment)
        values = tuple(v.strip() for v in m.group(1).split("、")) if m and "、" in m.group(1) else ()
        return tuple(v for v in values if v and len(v) <= 12)

    @property
    def nullable(self) -> bool:
        return "可能为空" in self.comment

    @property
    def kind(self) -> str:
        t = self.type.lower()
        if "primary key" in t or self.name == "id":
            return "key"
        if t.startswith("geometry") or t.startswith("geography"):
            return "geometry"
        if t.startswith(("date", "timestamp")):
            return "date"
        if t.startswith(_NUMBER):
            return "number"
        return "text" if t.startswith(_TEXT) else "other"


@dataclass(frozen=True)
class Table:
    name: str
    label: str
    ddl: str
    columns: tuple[Column, ...]

    @property
    def name_column(self) -> Column | None:
        """The column that names a row (``name``, or a comment ending in 名称/站名), to list rows by."""
        named = [c for c in self.columns if c.kind == "text" and (c.name == "name" or c.label.endswith(("名称", "站名")))]
        return named[0] if named else None


def parse_tables(context: str) -> list[Table]:
    """The ``CREATE TABLE`` statements of a question's context, with their comments: trailing ``-- 中文``
    ones (the bundled benchmark's style) or ``COMMENT ON TABLE / COLUMN`` statements (PostgreSQL's)."""
    comments = {(m.group(1) or m.group(2), m.group(3) or ""): m.group(4).replace("''", "'")
                for m in _COMMENT_ON.finditer(context)}
    tables = []
    for m in _CREATE.finditer(context):
        name, header, body = m.group(1), (m.group(2) or "").strip(), m.group(3)
        cols = []
        for line in body.splitlines():
            col = _COLUMN.match(line)
            if col is None or col.group(1).upper() in _CONSTRAINTS:
                continue
            note = (col.group(3) or "").strip() or comments.get((name, col.group(1)), "")
            cols.append(Column(col.group(1), col.group(2).strip(), note))
        label = header or comments.get((name, ""), "") or name
        ddl = "\n".join([m.group(0).strip(), *(c.group(0) for c in _COMMENT_ON.finditer(context)
                                                if name in (c.group(1), c.group(2)))])
        tables.append(Table(name, re.split(r"[（(，]", label)[0].strip(), ddl, tuple(cols)))
    return tables


def sql_pattern(sql: str) -> str:
    """What makes two golds one template: exact match's query shape (harness.scoring.exact: aliases, the
    order of AND-ed conditions, of SELECT items and of sources do not count) with every literal masked.
    Text sqlglot cannot parse falls back to the text with literals masked."""
    from sqlglot import exp

    from harness.scoring.exact import parse_statement, query_shape

    tree = parse_statement(sql)
    if tree is not None:
        masked = tree.transform(lambda n: exp.Literal.string("?") if isinstance(n, exp.Literal) else n)
        shape = query_shape(masked.sql(dialect="postgres"))
        if shape is not None:
            return shape.key()
    masked_text = re.sub(r"'[^']*'", "?", sql)
    masked_text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", "?", masked_text)
    return " ".join(masked_text.lower().rstrip(";").split())


def train_values(questions: Iterable[Question]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, column) -> the string literals single-table train golds compare that column with."""
    seen: dict[tuple[str, str], dict[str, None]] = {}
    for q in questions:
        tables = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", q.gold, flags=re.IGNORECASE)
        if len(set(tables)) != 1:
            continue
        for column, value in _EQUALS.findall(q.gold):
            seen.setdefault((tables[0], column), {})[value] = None
    return {k: tuple(v) for k, v in seen.items()}


@dataclass(frozen=True)
class Idiom:
    """One question shape over one table: wordings (format strings) and the SQL they ask for."""

    name: str
    wordings: tuple[str, ...]
    sql: str


def _count(where: str) -> str:
    return f"SELECT COUNT(*) AS cnt FROM {{t}}{where};"


# {T}: the table's label; {C}: the column's label; {c}: the column; {N}/{n}: the name column's label/column;
# {v}: a value ({v_sql}: quoted for SQL); {x}: a number; {k}: a row count; {y}: a year; {F}: an optional filter's words (ends with 的)
_IDIOMS: dict[str, tuple[Idiom, ...]] = {
    "table": (
        Idiom("count", ("{F}{T}一共有多少个？", "统计{F}{T}的数量"), _count("{where_w}")),
    ),
    "value": (
        Idiom("count_eq", ("{F}{C}为{v}的{T}有多少个？", "{F}{C}是{v}的{T}数量"), _count(" WHERE {c} = '{v_sql}'{and_w}")),
        Idiom("list_eq", ("列出{F}{C}为{v}的{T}的{N}", "{F}{C}是{v}的{T}有哪些"), "SELECT {n} FROM {t} WHERE {c} = '{v_sql}'{and_w};"),
    ),
    "null": (
        Idiom("count_null", ("{F}{C}为空的{T}有多少个？", "{F}没有{C}记录的{T}数量"), _count(" WHERE {c} IS NULL{and_w}")),
        Idiom("list_not_null", ("列出{F}{C}不为空的{T}的{N}", "{F}有{C}记录的{T}有哪些"),
              "SELECT {n} FROM {t} WHERE {c} IS NOT NULL{and_w};"),
    ),
    "number": (
        Idiom("avg", ("{F}{T}的平均{C}是多少？", "{F}{T}{C}的平均值"), "SELECT AVG({c}) AS avg_{c} FROM {t}{where_w};"),
        Idiom("sum", ("{F}{T}的{C}合计是多少？", "{F}{T}{C}总和"), "SELECT SUM({c}) AS total_{c} FROM {t}{where_w};"),
        Idiom("max", ("{F}{T}的最大{C}是多少？", "{F}{T}中{C}的最大值"), "SELECT MAX({c}) AS max_{c} FROM {t}{where_w};"),
        Idiom("min", ("{F}{T}的最小{C}是多少？", "{F}{T}中{C}的最小值"), "SELECT MIN({c}) AS min_{c} FROM {t}{where_w};"),
        Idiom("gt", ("{F}{C}大于{x}的{T}有多少个？", "{F}{C}超过{x}的{T}数量"), _count(" WHERE {c} > {x}{and_w}")),
        Idiom("lt", ("{F}{C}小于{x}的{T}有多少个？", "{F}{C}低于{x}的{T}数量"), _count(" WHERE {c} < {x}{and_w}")),
        Idiom("top", ("{F}{C}最大的{k}个{T}", "{F}{C}排名前{k}的{T}及其{C}"),
              "SELECT {n}, {c} FROM {t}{where_w} ORDER BY {c} DESC, id LIMIT {k};"),
        Idiom("bottom", ("{F}{C}最小的{k}个{T}", "{F}{C}倒数前{k}的{T}及其{C}"),
              "SELECT {n}, {c} FROM {t}{where_w} ORDER BY {c}, id LIMIT {k};"),
    ),
    "date": (
        Idiom("year", ("{F}{C}在{y}年的{T}有多少个？", "{y}年{F}{T}的数量（按{C}）"),
              _count(" WHERE EXTRACT(YEAR FROM {c}) = {y}{and_w}")),
        Idiom("after", ("{F}{C}在{y}年及以后的{T}有多少个？", "{y}年以来{F}{T}的数量（按{C}）"),
              _count(" WHERE {c} >= DATE '{y}-01-01'{and_w}")),
        Idiom("before", ("{F}{C}早于{y}年的{T}有多少个？", "{y}年以前{F}{T}的数量（按{C}）"),
              _count(" WHERE {c} < DATE '{y}-01-01'{and_w}")),
        Idiom("earliest", ("{F}{C}最早的{T}是哪个？", "{F}最早的{T}及其{C}"),
              "SELECT {n}, {c} FROM {t}{where_w} ORDER BY {c}, id LIMIT 1;"),
    ),
    "group": (
        Idiom("group_count", ("按{C}统计{F}{T}的数量", "{F}{T}按{C}分别有多少个？"),
              "SELECT {c}, COUNT(*) AS cnt FROM {t}{where_w} GROUP BY {c};"),
        Idiom("distinct", ("{F}{T}有哪些不同的{C}？", "列出{F}{T}的{C}（去重）"), "SELECT DISTINCT {c} FROM {t}{where_w};"),
    ),
}


class _Writer:
    """Fills idioms for one table, each with and without one equality filter on another column."""

    def __init__(self, table: Table, values: Callable[[Column], tuple[str, ...]], rng: random.Random) -> None:
        self.table, self.values, self.rng = table, values, rng
        self.filters = [(c, v) for c in table.columns if self.categorical(c) for v in values(c)]

    def categorical(self, col: Column) -> bool:
        """A column of a few values (a type, a status, a district) that a question filters or groups by."""
        name = self.table.name_column
        return col.kind == "text" and 2 <= len(self.values(col)) <= MAX_CATEGORIES and (
            name is None or col.name != name.name)

    def fill(self, idiom: Idiom, column: Column | None = None, value: str | None = None) -> list[tuple[str, str]]:
        out = []
        for filtered in (False, True):
            others = [(c, v) for c, v in self.filters if column is None or c.name != column.name]
            if filtered and not others:
                continue
            fc, fv = self.rng.choice(others) if filtered else (None, None)
            # a short value alone ("B的") is ambiguous: name its column ("体验安全评级等级为B的")
            spelled = fc is not None and (len(fv or "") <= 2 or self.rng.random() < 0.5)
            prefix = f"{fc.label}为{fv}的" if fc is not None and spelled else f"{fv}的" if fv else ""
            quoted = "'" + (fv or "").replace("'", "''") + "'"
            words = {"T": self.table.label, "t": self.table.name, "F": prefix,
                     "and_w": f" AND {fc.name} = {quoted}" if fc else "",
                     "where_w": f" WHERE {fc.name} = {quoted}" if fc else "",
                     "x": self.rng.choice((5, 10, 20, 30, 50, 100, 200, 500, 1000)), "k": self.rng.choice((3, 5, 10)),
                     "y": self.rng.randrange(1995, 2021), "v": value or "", "v_sql": (value or "").replace("'", "''")}
            if column is not None:
                words.update(C=column.label, c=column.name)
            name = self.table.name_column
            if "{n}" in idiom.sql:
                if name is None or (column is not None and name.name == column.name):
                    continue
                words.update(N=name.label or name.name, n=name.name)
            out.append((self.rng.choice(idiom.wordings).format(**words), idiom.sql.format(**words)))
        return out

    def examples(self) -> list[tuple[str, str]]:
        out = [pair for idiom in _IDIOMS["table"] for pair in self.fill(idiom)]
        for col in self.table.columns:
            if not col.label:
                continue  # no comment names it: a question could only say its identifier
            kinds = {"number": ("number",), "date": ("date",), "text": ("value", "group")}.get(col.kind, ())
            kinds += ("null",) if col.nullable else ()
            for kind in kinds:
                for idiom in _IDIOMS[kind]:
                    values = self.values(col) if kind == "value" else (None,)
                    for value in values[:MAX_VALUES]:
                        if kind == "group" and not self.categorical(col):
                            continue  # a free-text column (names, addresses): grouping by it asks nothing
                        out.extend(self.fill(idiom, col, value))
        return out


def schema_questions(train: Sequence[Question], *, exclude: Iterable[str] = (), rounds: int = 1) -> list[Question]:
    """Schema-grounding questions for the tables the ``train`` questions use (see the module's doc), in
    ``rounds`` rounds of wordings, filters and numbers (round r draws from seed r; a question already written
    by an earlier round is not repeated). ``exclude``: gold SQL of the splits that will be scored; an example of
    the same template (``sql_pattern``) is dropped."""
    banned = {sql_pattern(s) for s in exclude}
    seen_values = train_values(train)
    tables: dict[tuple[str, str], Table] = {}
    for q in train:
        for t in parse_tables(q.context):
            tables.setdefault((q.db, t.name), t)
    out: list[Question] = []
    seen: set[str] = set()
    for seed in range(rounds):
        rng = random.Random(seed)
        written = 0  # this round's questions, kept or not by the rounds before: they number its ids
        questions_this_round: set[str] = set()
        for (db, _), table in sorted(tables.items()):
            def values(col: Column, table: Table = table) -> tuple[str, ...]:
                return tuple(dict.fromkeys(col.listed_values + seen_values.get((table.name, col.name), ())))
            for question, sql in _Writer(table, values, rng).examples():
                if question in questions_this_round or sql_pattern(sql) in banned:
                    continue
                questions_this_round.add(question)
                written += 1
                if question not in seen:
                    seen.add(question)
                    out.append(Question(id=f"aug{seed}-{written:05d}", question=question, golds=(sql,),
                                        context=table.ddl, db=db, tags=("schema-augment",), source=f"{SOURCE}:{seed}"))
    return out
