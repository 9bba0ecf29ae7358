"""Result normalisation as an ordered list of small named steps (cf. sqlglot's optimizer RULES):

1. ``canonical_column``: every cell becomes a canonical value *of its column's type*: numbers of any
   numeric type -> float; text types -> str; json/jsonb -> ``Json``; geometry -> ``Geo``; a type
   without a natural Python counterpart (inet, enums, ranges, records...) -> ``Typed``. So a value of
   one type never equals a value of another: jsonb ``5`` is not bigint 5, JSON ``null`` is not SQL
   NULL, text ``'NaN'`` is not numeric NaN, inet is not text.
2. column matching (``harness.scoring.columns``): a permutation of the prediction's columns that fits
   the gold's
3. ``multiset_equal`` unless the gold's outermost query has ORDER BY (``gold_is_ordered``), then
   ``sequence_equal``
4. ``values_equal``: numbers within a relative tolerance of ``REL_TOL``, geometry topologically, the
   rest exactly

No step recurses without bound: JSON is serialised with an explicit stack, and arrays nest at most
as deep as PostgreSQL allows (6 dimensions).

>>> canonical_value(5, "int8") == canonical_value(5, "jsonb")
False
>>> values_equal(canonical_value(10.005, "numeric"), canonical_value(10.004999999999999, "float8"))
True
"""

from __future__ import annotations

import bisect
import datetime as dt
import decimal
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import shapely
import shapely.errors
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from harness.db.executor import GeoValue

REL_TOL = 1e-6
ABS_TOL = 1e-9
MAX_ARRAY_DEPTH = 6  # PostgreSQL's MAXDIM; anything deeper is compared as flat text
MAX_MATCHING_STEPS = 2_000_000  # bound on the bipartite fallback of multiset_equal

NUMBER_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8", "oid"})
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "char", "unknown", "citext"})
JSON_TYPES = frozenset({"json", "jsonb"})
GEO_TYPES = frozenset({"geometry", "geography"})
# types whose Python value (from psycopg) already says what it is: no type tag needed
NATURAL_TYPES = frozenset({"bool", "date", "time", "timetz", "timestamp", "timestamptz", "interval",
                           "uuid", "bytea"}) | NUMBER_TYPES | TEXT_TYPES | GEO_TYPES


@dataclass(frozen=True)
class Geo:
    """A canonical geometry: SRID plus the normalised shape."""

    srid: int
    geom: Any  # shapely geometry

    def key(self) -> str:
        return f"{self.srid}:{shapely.to_wkt(self.geom, rounding_precision=6)}"


@dataclass(frozen=True)
class RawGeo:
    """A geometry GEOS cannot read (curves, TIN, polyhedral surfaces): compared by its exact EWKB."""

    hex: str


@dataclass(frozen=True)
class Json:
    """A json/jsonb value as canonical text: keys sorted, no whitespace, numbers as numbers
    (``1.0`` is ``1``). Never equal to a value of another type, nor to SQL NULL."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Typed:
    """A value of a type with no natural Python counterpart (inet, cidr, enums, ranges, records,
    money...): equal only to a value of the same type with the same canonical form."""

    type: str
    value: Any

    def __str__(self) -> str:
        return str(self.value)


_NUMBERS = (int, float, decimal.Decimal)


def canonical_column(values: Sequence[Any], pg_type: str = "") -> list[Any]:
    """Step 1 for one column of one result (``pg_type`` as ``ResultSet.types`` names it). The common
    cases (text, numbers) take a fast path with the same outcome as ``canonical_value``."""
    if pg_type in TEXT_TYPES:
        return [v if type(v) is str else canonical_value(v, pg_type) for v in values]
    if pg_type in NUMBER_TYPES:
        return [float(v) if type(v) in _NUMBERS else canonical_value(v, pg_type) for v in values]
    return [canonical_value(v, pg_type) for v in values]


def canonical_value(value: Any, pg_type: str = "") -> Any:
    """Step 1 for one cell. Without a type name (``""``) the Python value alone decides.

    >>> canonical_value(None, "jsonb") is None, canonical_value("null", "jsonb")
    (True, Json(text='null'))
    >>> canonical_value("NaN", "text") == canonical_value(decimal.Decimal("NaN"), "numeric")
    False
    """
    if value is None:
        return None
    if pg_type in JSON_TYPES:  # the executor delivers JSON as text; a list is a json[]/jsonb[] array
        return _array(value, pg_type, 1) if isinstance(value, list) else json_value(value)
    if pg_type.startswith("_"):
        return _array(value, pg_type[1:], 1)
    plain = _plain(value)
    if not pg_type or pg_type in NATURAL_TYPES:
        return plain
    return Typed(pg_type, plain if _hashable(plain) else str(value))


def _plain(value: Any) -> Any:
    """A canonical value from the Python value alone."""
    if isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, decimal.Decimal):
        return float(value)  # NaN and +-Infinity become float nan / inf, never the text 'NaN'
    if isinstance(value, GeoValue):
        return _geo(value.hex)
    if isinstance(value, (dt.date, dt.datetime, dt.time, dt.timedelta, uuid.UUID)):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, (list, tuple)):
        return _array(value, "", 1)
    if isinstance(value, dict):
        return json_value(value)
    return str(value)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _array(value: Any, element_type: str, depth: int) -> Any:
    """A PostgreSQL array (nested lists, at most 6 deep) as a tuple of canonical elements."""
    if not isinstance(value, (list, tuple)):
        return canonical_value(value, element_type)
    if depth > MAX_ARRAY_DEPTH:
        return Typed("array", json_value(list(value)).text)
    return tuple(_array(v, element_type, depth + 1) if isinstance(v, (list, tuple))
                 else canonical_value(v, element_type) for v in value)


def json_value(value: Any) -> Json:
    """A json/jsonb value, whether the executor delivered its text (a ``str``) or psycopg's parsed
    Python value. Text that cannot be parsed, or nests too deep for the parser, is compared as text.

    >>> json_value('{"b": [1.0, 2], "a": null}')
    Json(text='{"a":null,"b":[1,2]}')
    >>> json_value("[" * 5000 + "]" * 5000).text[:3]
    '[[['
    """
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_float=decimal.Decimal)
        except (ValueError, RecursionError):
            return Json("".join(value.split()))
    return Json(json_text(value))


def json_text(value: Any) -> str:
    """Canonical JSON text of a parsed value, built with an explicit stack (no recursion, so any depth).

    >>> json_text({"k": [True, None, 1.50, "名"]})
    '{"k":[true,null,1.5,"名"]}'
    """
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Token):
            out.append(item.text)
            continue
        if isinstance(item, dict):
            parts: list[Any] = [_Token("{")]
            for i, key in enumerate(sorted(item, key=str)):
                parts += [_Token(("," if i else "") + json.dumps(str(key), ensure_ascii=False) + ":"), item[key]]
            parts.append(_Token("}"))
        elif isinstance(item, (list, tuple)):
            parts = [_Token("[")]
            for i, element in enumerate(item):
                parts += [_Token(","), element] if i else [element]
            parts.append(_Token("]"))
        else:
            out.append(_json_scalar(item))
            continue
        stack.extend(reversed(parts))
    return "".join(out)


@dataclass(frozen=True)
class _Token:
    text: str


def _json_scalar(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        number = decimal.Decimal(str(value)) if isinstance(value, float) else decimal.Decimal(value)
        if not number.is_finite():
            return str(number)
        if number == number.to_integral_value():
            return str(int(number))
        return format(number.normalize(), "f")
    return json.dumps(str(value), ensure_ascii=False)


@lru_cache(maxsize=65536)
def _geo(hex_ewkb: str) -> Geo | RawGeo:
    try:
        geom = shapely.from_wkb(hex_ewkb)
        srid = shapely.get_srid(geom)
        return Geo(srid, shapely.normalize(shapely.set_srid(geom, 0)))
    except (shapely.errors.GEOSException, NotImplementedError, ValueError, TypeError):
        return RawGeo(hex_ewkb.upper())


def values_equal(a: Any, b: Any) -> bool:
    """Step 4 for one cell. NULL equals NULL (and nothing else)."""
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, Geo):
        if a.srid != b.srid:
            return False
        if a.geom.is_empty or b.geom.is_empty:
            return bool(a.geom.is_empty and b.geom.is_empty)
        return bool(shapely.equals(a.geom, b.geom))
    if isinstance(a, tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def rows_equal(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))


def sequence_equal(gold: Sequence[tuple[Any, ...]], pred: Sequence[tuple[Any, ...]]) -> bool:
    """Step 3 when order matters: row i against row i."""
    return len(gold) == len(pred) and all(rows_equal(g, p) for g, p in zip(gold, pred, strict=True))


# --------------------------------------------------------------------------- multisets under tolerance


class _Marker:
    """Stands in the exact key for a cell compared with tolerance (never equal to any data value)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_FINITE, _NAN, _POS_INF, _NEG_INF, _GEO = (_Marker(n) for n in ("finite", "nan", "+inf", "-inf", "geo"))


def _exact_part(value: Any) -> tuple[Any, bool]:
    """(the part of a cell that must be equal exactly, whether the cell also needs a tolerant check)."""
    kind = type(value)
    if kind is float:
        if value != value:
            return _NAN, False
        if value in (math.inf, -math.inf):
            return (_POS_INF if value > 0 else _NEG_INF), False
        return _FINITE, True
    if kind is Geo:
        return (_GEO, value.srid, bool(value.geom.is_empty)), True
    if kind is tuple:
        parts = [_exact_part(v) for v in value]
        return tuple(p for p, _ in parts), any(loose for _, loose in parts)
    return value, False


def _split(row: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A row as (its exactly-compared key, its tolerantly-compared cells in column order)."""
    key, loose = [], []
    for value in row:
        kind = type(value)
        if kind is str or value is None:  # the common exact case, without a call
            key.append(value)
        elif kind is float and value - value == 0.0:  # finite
            key.append(_FINITE)
            loose.append(value)
        else:
            part, tolerant = _exact_part(value)
            key.append(part)
            if tolerant:
                loose.append(value)
    return tuple(key), tuple(loose)


def _sort_key(value: Any) -> Any:
    """A total order in which values equal within tolerance lie next to each other."""
    if value is None:
        return (0,)
    if isinstance(value, float):
        return (1, 0.0 if math.isnan(value) else value)
    if isinstance(value, Geo):
        return (2, value.key())
    if isinstance(value, tuple):
        return (3, tuple(_sort_key(v) for v in value))
    return (4, type(value).__name__, str(value))


Grouped = dict[tuple[Any, ...], list[tuple[Any, ...]]]


def grouped(rows: Sequence[Sequence[Any]]) -> Grouped:
    """Rows grouped by their exactly-compared cells; each group's tolerant cells, sorted. Computed once
    per result (or column), it can be compared with many others by ``groups_equal``."""
    groups: Grouped = defaultdict(list)
    for row in rows:
        key, loose = _split(row)
        groups[key].append(loose)
    for members in groups.values():
        if members and members[0]:
            simple = all(type(v) is float for v in members[0])
            members.sort(key=None if simple else lambda m: tuple(_sort_key(v) for v in m))
    return groups


def groups_equal(gold: Grouped, pred: Grouped) -> bool:
    """Is there a one-to-one pairing of the rows behind ``gold`` and ``pred`` with every pair
    ``rows_equal``? Within a group, sorted order pairs them (exactly so for one number per row);
    otherwise bipartite matching decides."""
    if gold.keys() != pred.keys():
        return False
    for key, g in gold.items():
        p = pred[key]
        if len(g) != len(p):
            return False
        if not g[0] or _close(g, p):
            continue
        # One finite number per row is the one-dimensional case, where pairing in sorted order is exact
        # (each value's tolerance window is an interval that moves up with the value): no search needed.
        if (len(g[0]) == 1 and type(g[0][0]) is float) or not _perfect_matching(g, p):
            return False
    return True


def _close(gold: list[tuple[Any, ...]], pred: list[tuple[Any, ...]]) -> bool:
    """``sequence_equal`` of tolerant cells, with a fast path when they are all numbers."""
    if all(type(v) is float for v in gold[0]) and all(type(v) is float for v in pred[0]):
        isclose = math.isclose
        return all(isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
                   for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
    return sequence_equal(gold, pred)


def multiset_equal(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> bool:
    """Step 3 when order does not matter: is there a one-to-one pairing of gold rows with predicted
    rows such that every pair is ``rows_equal``? Exactly that, with no rounding of numbers: rows are
    grouped by their exactly-compared cells, and within a group the tolerant cells are paired by
    sorting, or, when sorting cannot pair them, by bipartite matching.

    >>> multiset_equal([(10.005, "a"), (10.004999999, "b")], [(10.004999999, "a"), (10.005, "b")])
    True
    """
    return len(gold) == len(pred) and groups_equal(grouped(gold), grouped(pred))


def _perfect_matching(gold: list[tuple[Any, ...]], pred: list[tuple[Any, ...]]) -> bool:
    """Kuhn's augmenting paths (iterative) over the pairs that are ``rows_equal``. Candidates of a gold
    row are looked up in a window of the predictions sorted by its first finite number, when it has one.
    Gives up (no match) after ``MAX_MATCHING_STEPS`` comparisons."""
    column = next((i for i, v in enumerate(gold[0]) if isinstance(v, float) and math.isfinite(v)), None)
    if column is not None:
        pred = sorted(pred, key=lambda r: r[column])
    values = [r[column] for r in pred] if column is not None else []
    steps = [0]

    def candidates(row: tuple[Any, ...]) -> Iterator[int]:
        if column is None:
            indexes: Sequence[int] = range(len(pred))
        else:
            x = row[column]
            d = 2 * REL_TOL * abs(x) + ABS_TOL
            indexes = range(bisect.bisect_left(values, x - d), bisect.bisect_right(values, x + d))
        for j in indexes:
            steps[0] += 1
            if rows_equal(row, pred[j]):
                yield j

    edges = []
    for row in gold:
        edges.append(list(candidates(row)))
        if not edges[-1] or steps[0] > MAX_MATCHING_STEPS:
            return False
    return _kuhn(edges, len(pred))


def _kuhn(edges: list[list[int]], n_right: int) -> bool:
    """Is there a matching that covers every left vertex? Augmenting paths found with an explicit stack."""
    match_right = [-1] * n_right
    match_left = [-1] * len(edges)
    for start in range(len(edges)):
        via: dict[int, int] = {}  # right vertex -> the left vertex it was reached from
        stack, seen, free = [start], {start}, -1
        while stack and free < 0:
            left = stack.pop()
            for right in edges[left]:
                if right in via:
                    continue
                via[right] = left
                if match_right[right] < 0:
                    free = right
                    break
                if match_right[right] not in seen:
                    seen.add(match_right[right])
                    stack.append(match_right[right])
        if free < 0:
            return False
        while free >= 0:  # flip the path: every right vertex on it takes the left one that reached it
            left = via[free]
            previous = match_left[left]
            match_right[free], match_left[left] = left, free
            free = previous
    return True


@lru_cache(maxsize=4096)
def gold_is_ordered(gold_sql: str) -> bool:
    """Step 3's switch: does the gold's OUTERMOST query have ORDER BY? Decided from the syntax tree.

    >>> gold_is_ordered("SELECT name FROM t ORDER BY gl DESC LIMIT 3")
    True
    >>> gold_is_ordered("SELECT * FROM (SELECT name FROM t ORDER BY gl) s")
    False
    """
    try:
        tree = sqlglot.parse_one(gold_sql, read="postgres")
    except (ParseError, TokenError):
        return " order by " in " ".join(gold_sql.lower().split()[-40:])
    return tree_is_ordered(tree)


def tree_is_ordered(tree: exp.Expr | None) -> bool:
    """``gold_is_ordered`` for a statement already parsed."""
    if isinstance(tree, exp.Subquery):
        tree = tree.unnest()
    return tree is not None and tree.args.get("order") is not None
