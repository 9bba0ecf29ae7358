"""What a reader sees is what the model wrote: invisible and reordering characters shown as escapes.

A model's output can hold characters that a report would render as nothing, or that change how the
text around them is displayed: NUL and other control characters, the bidirectional overrides and
isolates (U+202A..U+202E, U+2066..U+2069) that make ``... WHERE a = 'x' -- `` display in another order
than it runs, zero-width spaces and joiners, the byte-order mark, soft hyphens, Unicode tag
characters, line and paragraph separators. ``visible_text`` replaces each of them by a Python-style
escape (``\\x00``, ``\\u202e``, ``\\U000e0041``); newline and tab stay as they are, for layout. The report
(HTML and console) passes every model output through it before escaping for its medium.

>>> visible_text("SELECT 1\\x00; DROP")
'SELECT 1\\\\x00; DROP'
>>> visible_text("WHERE name = '\\u202eabc\\u202c'\\n\\tAND x")
"WHERE name = '\\\\u202eabc\\\\u202c'\\n\\tAND x"
>>> visible_text("杭州市西湖区")
'杭州市西湖区'
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import cache

__all__ = ["INVISIBLE_CATEGORIES", "visible_text"]

# Unicode general categories that render as nothing or act on the display: controls (Cc), format
# characters (Cf: bidi controls, zero-width characters, BOM, soft hyphen, tags), surrogates (Cs), line
# and paragraph separators (Zl, Zp).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_KEPT = frozenset("\n\t")


@cache
def _invisible_re() -> re.Pattern[str]:
    """One character class of every code point in ``INVISIBLE_CATEGORIES`` (built once, ~0.2 s)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if c in _KEPT or unicodedata.category(c) not in INVISIBLE_CATEGORIES:
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    body = "".join(_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges)
    return re.compile(f"[{body}]")


def _class_char(cp: int) -> str:
    return f"\\U{cp:08x}"  # an escape the regex parser reads, so no raw control lands in the pattern


def _escape(m: re.Match[str]) -> str:
    cp = ord(m.group(0))
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def visible_text(text: str) -> str:
    """``text`` with every invisible or display-reordering character replaced by its escape."""
    return _invisible_re().sub(_escape, text)
