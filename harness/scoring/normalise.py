"""Result normalisation as an ordered list of small named steps (cf. sqlglot's optimizer RULES):

1. ``canonical_value``: numbers -> float, geometry -> normalised shape, JSON/arrays -> hashable text
2. ``match_columns``: find a permutation of the prediction's columns that fits the gold's
3. ``sort_rows`` unless the gold's outermost query has ORDER BY (``gold_is_ordered``)
4. ``rows_equal``: numbers within a relative tolerance, geometry topologically, the rest exactly
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import math
import uuid
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
MAX_PERMUTATIONS = 5040  # 7 columns; wider results are matched greedily by column signature


@dataclass(frozen=True)
class Geo:
    """A canonical geometry: SRID plus the normalised shape."""

    srid: int
    geom: Any  # shapely geometry

    def key(self) -> str:
        return f"{self.srid}:{shapely.to_wkt(self.geom, rounding_precision=6)}"


def canonical_value(value: Any) -> Any:
    """Step 1. Values of different kinds never compare equal (WKT text is not a geometry)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, GeoValue):
        return _geo(value.hex)
    if isinstance(value, (dt.date, dt.datetime, dt.time, dt.timedelta, uuid.UUID)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(canonical_value(v) for v in value)
    if isinstance(value, dict):
        return "json:" + json.dumps(value, sort_keys=True, default=str)
    return str(value)


@dataclass(frozen=True)
class RawGeo:
    """A geometry GEOS cannot read (curves, TIN, polyhedral surfaces): compared by its exact EWKB."""

    hex: str


@lru_cache(maxsize=65536)
def _geo(hex_ewkb: str) -> Geo | RawGeo:
    try:
        geom = shapely.from_wkb(hex_ewkb)
        srid = shapely.get_srid(geom)
        return Geo(srid, shapely.normalize(shapely.set_srid(geom, 0)))
    except (shapely.errors.GEOSException, NotImplementedError, ValueError, TypeError):
        return RawGeo(hex_ewkb.upper())


def _coarse(value: Any) -> Any:
    """A sort/hash key that equal-within-tolerance values share (numbers rounded coarsely)."""
    if isinstance(value, float):
        if math.isnan(value):
            return (1, "nan")
        if value == 0 or math.isinf(value):
            return (1, value)
        return (1, float(f"{value:.4g}"))
    if isinstance(value, Geo):
        return (2, value.srid, round(float(shapely.area(value.geom)), 6), round(float(shapely.length(value.geom)), 6),
                shapely.get_type_id(value.geom))
    if value is None:
        return (0, "")
    if isinstance(value, tuple):
        return (3, tuple(_coarse(v) for v in value))
    return (4, type(value).__name__, str(value))


def values_equal(a: Any, b: Any) -> bool:
    """Step 4 for one cell. NULL equals NULL."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)
    if isinstance(a, Geo) and isinstance(b, Geo):
        if a.srid != b.srid:
            return False
        if a.geom.is_empty or b.geom.is_empty:
            return bool(a.geom.is_empty and b.geom.is_empty)
        return bool(shapely.equals(a.geom, b.geom))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    return bool(a == b)


def rows_equal(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))


def multiset_equal(gold: list[tuple[Any, ...]], pred: list[tuple[Any, ...]]) -> bool:
    """Rows as multisets (duplicates count), with tolerant cell equality."""
    if len(gold) != len(pred):
        return False
    buckets: dict[Any, list[tuple[Any, ...]]] = {}
    for row in pred:
        buckets.setdefault(tuple(_coarse(v) for v in row), []).append(row)
    for row in gold:
        bucket = buckets.get(tuple(_coarse(v) for v in row))
        if not bucket:
            return False
        for i, cand in enumerate(bucket):
            if rows_equal(row, cand):
                bucket.pop(i)
                break
        else:
            return False
    return True


def sequence_equal(gold: list[tuple[Any, ...]], pred: list[tuple[Any, ...]]) -> bool:
    return len(gold) == len(pred) and all(rows_equal(g, p) for g, p in zip(gold, pred, strict=True))


def column_signature(rows: list[tuple[Any, ...]], index: int) -> tuple[Any, ...]:
    return tuple(sorted((_coarse(r[index]) for r in rows), key=repr))


def candidate_mappings(gold: list[tuple[Any, ...]], pred: list[tuple[Any, ...]], gold_width: int,
                       pred_width: int) -> itertools.chain[tuple[int, ...]]:
    """Step 2: for each gold column, the prediction columns whose value multiset could match it; yield
    assignments (gold column i -> prediction column m[i]), most plausible first."""
    gold_sigs = [column_signature(gold, i) for i in range(gold_width)]
    pred_sigs = [column_signature(pred, j) for j in range(pred_width)]
    options = []
    for gs in gold_sigs:
        same = [j for j, ps in enumerate(pred_sigs) if ps == gs]
        options.append(same or list(range(pred_width)))

    def assignments() -> Iterator[tuple[int, ...]]:
        count = 0
        for combo in itertools.product(*options):
            if len(set(combo)) != len(combo):
                continue
            count += 1
            if count > MAX_PERMUTATIONS:
                return
            yield combo

    return itertools.chain(assignments())


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
    if isinstance(tree, exp.Subquery):
        tree = tree.unnest()
    return tree is not None and tree.args.get("order") is not None
