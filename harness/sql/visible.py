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

import unicodedata
from functools import lru_cache

__all__ = ["INVISIBLE_CATEGORIES", "visible_text"]

# Unicode general categories that render as nothing or act on the display: controls (Cc), format
# characters (Cf: bidi controls, zero-width characters, BOM, soft hyphen, tags), surrogates (Cs), line
# and paragraph separators (Zl, Zp).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_KEPT = frozenset("\n\t")


@lru_cache(maxsize=1 << 16)
def _invisible(c: str) -> bool:
    """One character's verdict, cached: texts repeat few distinct characters, while one pattern of every
    invisible code point would cost a scan of all 1.1 million of them (0.3-0.4 s, once per process)."""
    return c not in _KEPT and unicodedata.category(c) in INVISIBLE_CATEGORIES


def _escape(c: str) -> str:
    cp = ord(c)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def visible_text(text: str) -> str:
    """``text`` with every invisible or display-reordering character replaced by its escape."""
    if not any(_invisible(c) for c in set(text)):
        return text
    return "".join(_escape(c) if _invisible(c) else c for c in text)
