"""Invented literals: coordinates in spatial constructors that the question and context never gave.

The seed's base model answered a question about 市民中心站 in 杭州 with ``ST_MakePoint(116.39, 39.91)``,
the centre of Beijing. A model that cannot look coordinates up must take them from the question or the
context; any other coordinate is made up.

What counts as a coordinate: the bare numeric arguments of point/envelope constructors (``ST_MakePoint``,
``ST_Point``, ``ST_PointZ``..., ``ST_MakeEnvelope``; SRID positions excluded), and every number in WKT/EWKT
text (``'POINT(120.2 30.3)'`` in ``ST_GeomFromText``, ``ST_GeogFromText``, a ``::geometry`` cast, ...)
and in GeoJSON ``"coordinates"``. Distances and radii (``ST_DWithin(..., 500)``, ``ST_Buffer(g, 100)``)
are not coordinates and are not checked. A number is given when it equals, numerically, a number in the
question or context (116.390 == 116.39; the sign is ignored, for 西经/南纬 wording), or appears in the
question as written. 0, 90 and 180 (whole-world envelopes) are never reported.

>>> invented_coordinates("SELECT ST_SetSRID(ST_MakePoint(116.39, 39.91), 4326)", "市民中心站附近有哪些人防工程？", "")
('116.39', '39.91')
>>> invented_coordinates("SELECT ST_MakePoint(120.210, 30.25)", "经度120.21，纬度30.25附近", "")
()
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

__all__ = ["invented_coordinates", "constructor_coordinates"]

# constructor (lower-case) -> argument positions (0-based) that are SRIDs, not coordinates
_POINT_CONSTRUCTORS: dict[str, frozenset[int]] = {
    "st_makepoint": frozenset(),
    "st_makepointm": frozenset(),
    "st_point": frozenset({2}),
    "st_pointz": frozenset({3}),
    "st_pointm": frozenset({3}),
    "st_pointzm": frozenset({4}),
    "st_makeenvelope": frozenset({4}),
    "st_tileenvelope": frozenset({0, 1, 2}),  # zoom/x/y are tile indices, not coordinates
}
_CALL_RE = re.compile(r"\b(" + "|".join(_POINT_CONSTRUCTORS) + r")\s*\(", re.IGNORECASE)
_WKT_RE = re.compile(
    r"'\s*(?:SRID\s*=\s*\d+\s*;\s*)?(?:POINT|LINESTRING|POLYGON|MULTIPOINT|MULTILINESTRING|MULTIPOLYGON"
    r"|GEOMETRYCOLLECTION|CIRCULARSTRING|COMPOUNDCURVE|CURVEPOLYGON|TRIANGLE|TIN|POLYHEDRALSURFACE)"
    r"\s*(?:ZM|Z|M)?\s*\(((?:[^']|'')*)'?", re.IGNORECASE)
_GEOJSON_RE = re.compile(r"\"coordinates\"\s*:\s*(\[[^']*?\])\s*[,}]", re.IGNORECASE)
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BARE_NUMBER_RE = re.compile(r"^\(?\s*[-+]?\s*((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\)?"
                             r"(?:\s*::\s*[a-z ]+)?\s*$", re.IGNORECASE)
_NEVER_INVENTED = frozenset({Decimal(0), Decimal(90), Decimal(180)})


def constructor_coordinates(sql: str) -> list[tuple[str, str]]:
    """(number as written, where) for every coordinate literal in ``sql``, in order.

    >>> constructor_coordinates("ST_MakeEnvelope(120.1, 30.1, 120.3, 30.4, 4326)")
    [('120.1', 'ST_MakeEnvelope'), ('30.1', 'ST_MakeEnvelope'), ('120.3', 'ST_MakeEnvelope'), ('30.4', 'ST_MakeEnvelope')]
    """
    found: list[tuple[int, str, str]] = []
    for m in _CALL_RE.finditer(sql):
        name = m.group(1)
        srid_positions = _POINT_CONSTRUCTORS[name.lower()]
        for position, arg in enumerate(_call_args(sql, m.end())):
            if position in srid_positions:
                continue
            bare = _BARE_NUMBER_RE.match(arg.strip())
            if bare:
                found.append((m.start(), bare.group(1), name))
    for m in _WKT_RE.finditer(sql):
        for number in _NUMBER_RE.findall(m.group(1)):
            found.append((m.start(), number.lstrip("+-"), "WKT"))
    for m in _GEOJSON_RE.finditer(sql):
        for number in _NUMBER_RE.findall(m.group(1)):
            found.append((m.start(), number.lstrip("+-"), "GeoJSON"))
    found.sort(key=lambda t: t[0])
    return [(number, where) for _, number, where in found]


def invented_coordinates(sql: str, question: str, context: str) -> tuple[str, ...]:
    """Coordinate literals of ``sql`` found in neither ``question`` nor ``context`` (as written in sql)."""
    given_text = unicodedata.normalize("NFKC", f"{question}\n{context}")
    question_text = unicodedata.normalize("NFKC", question)
    given = {v for v in (_decimal(n) for n in _NUMBER_RE.findall(given_text)) if v is not None}
    invented: dict[str, None] = {}
    for number, _where in constructor_coordinates(sql):
        value = _decimal(number)
        if value is None or value in _NEVER_INVENTED or value in given:
            continue
        if number in question_text:
            continue
        invented[number] = None
    return tuple(invented)


def _decimal(text: str) -> Decimal | None:
    try:
        value = abs(Decimal(text.replace(" ", "")))
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    return value


def _call_args(sql: str, start: int) -> list[str]:
    """Top-level comma-separated arguments of a call whose '(' ends just before ``start``.

    Tolerates truncation: an unclosed call yields the arguments seen so far.
    """
    args: list[str] = []
    depth = 0
    current: list[str] = []
    i = start
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            j = i + 1
            while j < n:
                if sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            current.append(sql[i:j + 1])
            i = j + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                args.append("".join(current))
                return args
            depth -= 1
        elif c == "," and depth == 0:
            args.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    if "".join(current).strip():
        args.append("".join(current))
    return args
