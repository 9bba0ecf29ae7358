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
from bisect import bisect_left
from decimal import Decimal, InvalidOperation

from harness.sql.scanner import top_level

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
_WKT_RE = re.compile(
    r"'\s*(?:SRID\s*=\s*\d+\s*;\s*)?(?:POINT|LINESTRING|POLYGON|MULTIPOINT|MULTILINESTRING|MULTIPOLYGON"
    r"|GEOMETRYCOLLECTION|CIRCULARSTRING|COMPOUNDCURVE|CURVEPOLYGON|TRIANGLE|TIN|POLYHEDRALSURFACE)"
    r"\s*(?:ZM|Z|M)?\s*\(((?:[^']|'')*)'?", re.IGNORECASE)
_GEOJSON_KEY_RE = re.compile(r"\"coordinates\"\s*:\s*\[", re.IGNORECASE)
_ARRAY_END_RE = re.compile(r"\]\s*[,}]")
_QUOTE_RE = re.compile("'")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# possessive and atomic: a long run of digits or spaces is read once, never backtracked through
_BARE_NUMBER_RE = re.compile(r"\s*+\(?\s*+[-+]?\s*+((?>\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*+\)?"
                             r"(?:\s*+::\s*+[a-z ]++)?\s*+", re.IGNORECASE)
_NEVER_INVENTED = frozenset({Decimal(0), Decimal(90), Decimal(180)})


def constructor_coordinates(sql: str) -> list[tuple[str, str]]:
    """(number as written, where) for every coordinate literal in ``sql``, in order.

    Linear in the length of ``sql`` whatever it holds: one pass finds every constructor call and its
    arguments, and each GeoJSON array is delimited by a lookup, not by a regex that re-reads the rest
    of the text from every ``"coordinates"`` key.

    >>> constructor_coordinates("ST_MakeEnvelope(120.1, 30.1, 120.3, 30.4, 4326)")
    [('120.1', 'ST_MakeEnvelope'), ('30.1', 'ST_MakeEnvelope'), ('120.3', 'ST_MakeEnvelope'), ('30.4', 'ST_MakeEnvelope')]
    """
    found: list[tuple[int, str, str]] = []
    for start, name, args in _constructor_calls(sql):
        srid_positions = _POINT_CONSTRUCTORS[name.lower()]
        for position, (lo, hi) in enumerate(args):
            if position in srid_positions:
                continue
            bare = _BARE_NUMBER_RE.fullmatch(sql, lo, hi)
            if bare:
                found.append((start, bare.group(1), name))
    for m in _WKT_RE.finditer(sql):
        for number in _NUMBER_RE.findall(m.group(1)):
            found.append((m.start(), number.lstrip("+-"), "WKT"))
    for start, array in _geojson_arrays(sql):
        for number in _NUMBER_RE.findall(array):
            found.append((start, number.lstrip("+-"), "GeoJSON"))
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


def _constructor_calls(sql: str) -> list[tuple[int, str, list[tuple[int, int]]]]:
    """(start, name as written, argument spans) of each constructor call in the SQL code, in one pass.

    Parentheses and commas count only outside literals and comments (``harness.sql.scanner``). A call
    left open by truncation yields the arguments seen so far.
    """
    calls: list[tuple[int, str, list[tuple[int, int]]]] = []
    stack: list[list[int]] = []  # per open parenthesis: [index in calls or -1, start of its current argument]
    for i in top_level(sql, "(),"):
        c = sql[i]
        if c == "(":
            start, name = _name_before(sql, i)
            if name.lower() in _POINT_CONSTRUCTORS:
                calls.append((start, name, []))
            stack.append([len(calls) - 1 if name.lower() in _POINT_CONSTRUCTORS else -1, i + 1])
        elif stack:
            call, arg_start = stack.pop() if c == ")" else stack[-1]
            if call >= 0:
                calls[call][2].append((arg_start, i))
            if c == ",":
                stack[-1][1] = i + 1
    last = len(sql.rstrip())
    for call, arg_start in stack:
        if call >= 0 and arg_start < last:
            calls[call][2].append((arg_start, len(sql)))
    return calls


def _name_before(sql: str, paren: int) -> tuple[int, str]:
    """The word (and its start) that ends just before ``paren``, whitespace allowed between."""
    end = paren
    while end > 0 and sql[end - 1].isspace():
        end -= 1
    start = end
    while start > 0 and (sql[start - 1].isalnum() or sql[start - 1] == "_"):
        start -= 1
    return start, sql[start:end]


def _geojson_arrays(sql: str) -> list[tuple[int, str]]:
    """(key start, array text) for each ``"coordinates": [...]`` whose array closes before any quote.

    The array ends at the first ``]`` followed by ``,`` or ``}``; both that and the next ``'`` are
    found by bisection in positions collected once, so the whole search is linear.
    """
    ends = [(m.start(), m.end()) for m in _ARRAY_END_RE.finditer(sql)]
    end_starts = [e[0] for e in ends]
    quotes = [m.start() for m in _QUOTE_RE.finditer(sql)]
    out: list[tuple[int, str]] = []
    resume = 0
    for m in _GEOJSON_KEY_RE.finditer(sql):
        if m.start() < resume:
            continue
        bracket = m.end() - 1
        k = bisect_left(end_starts, bracket)
        if k == len(ends):
            break
        q = bisect_left(quotes, bracket)
        if q < len(quotes) and quotes[q] < end_starts[k]:
            continue
        out.append((m.start(), sql[bracket:end_starts[k] + 1]))
        resume = ends[k][1]
    return out
