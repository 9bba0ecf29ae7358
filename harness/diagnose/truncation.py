"""Truncation: the output stopped before the statement did.

An output is truncated when the backend says so (``finish_reason == 'length'``), or when no statement
terminator (a ``;`` or a closing fence) came before the output ended *and* the statement does not parse
or the output loops (a loop never ends by itself: something cut it):
a complete ``SELECT ... FROM t`` that a model ended with EOS and no ``;`` is finished, not cut off
(flagging it made the flag noise on real data: 42 complete GeoSQL-Bench golds). Empty outputs are never
truncated (they are ``no_sql``); prose-only output is truncated only when ``finish_reason`` is ``length``.

>>> from harness.sql.extract import extract_sql
>>> raw = "SELECT name FROM rfgcpy WHERE ssqx = '上城区' AND"
>>> truncation(raw, extract_sql(raw), "stop")
"no ';' or closing fence before the output ended; the statement does not parse"
>>> truncation("SELECT 1;", extract_sql("SELECT 1;"), "stop") is None
True
"""

from __future__ import annotations

from harness.sql.extract import Extracted
from harness.sql.schema import parse_error

__all__ = ["truncation"]


def truncation(raw: str, extracted: Extracted, finish_reason: str, *, parses: bool | None = None,
               looped: bool = False) -> str | None:
    """Why the output counts as truncated, or None. ``parses``: whether the statement parsed, if known."""
    if not raw or not raw.strip():
        return None
    if finish_reason == "length":
        return "finish_reason=length: the token limit ended the output"
    if extracted.sql is None or extracted.terminated:
        return None
    if parses is None:
        parses = _parses(extracted.sql)
    if looped:
        return "no ';' or closing fence before the output ended; the output loops"
    if parses:
        return None
    return "no ';' or closing fence before the output ended; the statement does not parse"


def _parses(sql: str) -> bool:
    return parse_error(sql) is None
