"""One lexical scanner for PostgreSQL text: where the top-level ``;`` (or any other character) is.

Extraction (``harness.sql.extract``) and the generation stop criterion (``harness.models.stopping``)
must agree on where a statement ends, so both ask this module. It knows PostgreSQL's lexical rules
(``scan.l``), as far as they decide whether a character is inside something:

* ``'...'`` with ``''`` doubling; under ``standard_conforming_strings`` (on since PostgreSQL 9.1) a
  backslash in it is an ordinary character;
* ``E'...'`` escape strings, where ``\\'`` is a quote and ``\\\\`` a backslash (the ``E`` must begin a
  token: ``xE'...'`` is the identifier ``xE`` followed by a plain string);
* ``U&'...'`` and ``U&"..."``: a backslash starts a Unicode escape there, never a quote escape, so they
  end where plain strings and identifiers do; ``B''``/``X''``/``N''`` likewise;
* ``"..."`` quoted identifiers with ``""`` doubling;
* ``--`` comments to the end of the line, and nested ``/* /* */ */`` comments;
* dollar quotes ``$$...$$`` and ``$tag$...$tag$`` (a ``$`` inside a word, as in ``a$b``, or before a
  digit, as in ``$1``, opens nothing).

The scanner is incremental: feed it chunks as a model writes them and it reports each top-level
``;`` once, in time proportional to the new text only (a ``--`` or ``''`` split across two chunks is
handled). Offsets count characters from the start of everything fed.

>>> s = SqlScanner()
>>> s.feed("SELECT E'it\\\\'s; ok' FROM t")
[]
>>> s.state
'code'
>>> s.feed("; SELECT 2;")
[26, 36]
>>> first_statement_end("SELECT $q$ a; b $q$, 'x;' -- ;\\n FROM t; SELECT 2")
38
>>> s = SqlScanner()
>>> s.feed("SELECT 'a"), s.state, s.feed("b';"), s.state
([], 'string', [11], 'code')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Literal

__all__ = ["Mode", "SqlScanner", "first_statement_end", "statement_ends", "top_level"]

Mode = Literal["code", "string", "escape_string", "quoted_identifier", "line_comment", "block_comment",
               "dollar_quote"]

# Internal states. The *_QUOTE, *_DASH, *_SLASH, *_STAR, *_BACKSLASH and DOLLAR_TAG states wait for one
# more character to decide (so a token split across two chunks is read the same as an unsplit one).
_CODE, _CODE_DASH, _CODE_SLASH, _DOLLAR_TAG = "code", "code-", "code/", "code$"
_STRING, _STRING_QUOTE = "string", "string'"
_ESTRING, _ESTRING_QUOTE, _ESTRING_BACKSLASH = "estring", "estring'", "estring\\"
_IDENT, _IDENT_QUOTE = "ident", 'ident"'
_LINE_COMMENT = "line_comment"
_BLOCK, _BLOCK_STAR, _BLOCK_SLASH = "block", "block*", "block/"
_DOLLAR = "dollar"

_PUBLIC: dict[str, Mode] = {
    _CODE: "code", _CODE_DASH: "code", _CODE_SLASH: "code", _DOLLAR_TAG: "code",
    _STRING: "string", _STRING_QUOTE: "code",
    _ESTRING: "escape_string", _ESTRING_BACKSLASH: "escape_string", _ESTRING_QUOTE: "code",
    _IDENT: "quoted_identifier", _IDENT_QUOTE: "code",
    _LINE_COMMENT: "line_comment",
    _BLOCK: "block_comment", _BLOCK_STAR: "block_comment", _BLOCK_SLASH: "block_comment",
    _DOLLAR: "dollar_quote",
}

# Inside a literal, identifier or block comment only a few characters matter; each leads to a state
# that reads the next character (a doubled quote or the end, an escaped character, a nested or closing
# comment). One table, so that every body is skipped by the same code (``_body``, through ``_BODY``:
# the pattern that finds those characters, and where each leads).
_LEADS: dict[str, dict[str, str]] = {
    _STRING: {"'": _STRING_QUOTE},
    _ESTRING: {"'": _ESTRING_QUOTE, "\\": _ESTRING_BACKSLASH},
    _IDENT: {'"': _IDENT_QUOTE},
    _BLOCK: {"*": _BLOCK_STAR, "/": _BLOCK_SLASH},
}
_BODY = {state: (re.compile(f"[{re.escape(''.join(leads))}]"), leads) for state, leads in _LEADS.items()}
# After a quote that may close a literal or identifier: the same quote again is a doubled one (the body
# goes on), anything else follows the end (``_after_quote``).
_REOPEN: dict[str, tuple[str, str]] = {
    _STRING_QUOTE: ("'", _STRING), _ESTRING_QUOTE: ("'", _ESTRING), _IDENT_QUOTE: ('"', _IDENT),
}

_SPECIAL = "'\"$/-"
_LINE_END = re.compile(r"[\n\r]")
_TAG_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*")
_TAG_CONT = re.compile(r"[A-Za-z0-9_\u0080-\U0010ffff]*")


def _is_word_char(c: str) -> bool:
    """Can ``c`` continue an identifier or keyword? (``$`` can: ``a$b`` is one name.)"""
    return c.isalnum() or c in "_$" or ord(c) >= 0x80


class SqlScanner:
    """Incremental scanner; ``feed`` returns the offsets of top-level characters matching ``stops``.

    ``stops`` is the body of a regular-expression character class (default ``";"``): extraction also
    asks for top-level newlines and backticks. A character that opens a literal or comment (one of
    ``' " $ / -``) is never reported.

    >>> s = SqlScanner()
    >>> s.feed("SELECT 1 -"), s.feed("- ;\\n;"), s.state
    ([], [14], 'code')
    >>> s = SqlScanner()
    >>> s.feed("/* a /* b */ ; */ $x$ ; $x"), s.state, s.feed("$;")
    ([], 'dollar_quote', [27])
    """

    def __init__(self, stops: str = ";") -> None:
        self._code_re = re.compile(f"[{re.escape(_SPECIAL)}]|[{stops}]")
        self._state = _CODE
        self._offset = 0  # characters fed so far
        self._token_end = 0  # offset just after the last string, identifier, comment or dollar quote
        self._tail = ""  # the last two characters fed, for looking back across a chunk boundary
        self._tag = ""  # a dollar quote's tag, while it is being read or inside its body
        self._body_tail = ""  # inside a dollar quote: the last len(delimiter) - 1 characters
        self._depth = 0  # nesting of /* */ comments
        self._buf, self._base, self._stop = "", 0, -1  # the chunk being scanned (after _tail), its offset
        self._handlers: dict[str, Callable[[str, int], int]] = {
            _CODE: self._code, _CODE_DASH: self._code_dash, _CODE_SLASH: self._code_slash,
            _DOLLAR_TAG: self._dollar_tag, _STRING: self._body, _STRING_QUOTE: self._after_quote,
            _ESTRING: self._body, _ESTRING_QUOTE: self._after_quote, _ESTRING_BACKSLASH: self._estring_backslash,
            _IDENT: self._body, _IDENT_QUOTE: self._after_quote, _LINE_COMMENT: self._line_comment,
            _BLOCK: self._body, _BLOCK_STAR: self._block_star, _BLOCK_SLASH: self._block_slash,
            _DOLLAR: self._dollar,
        }

    @property
    def state(self) -> Mode:
        """Where the text fed so far ends: in code, or inside a literal, identifier or comment."""
        return _PUBLIC[self._state]

    @property
    def offset(self) -> int:
        """How many characters have been fed."""
        return self._offset

    def feed(self, text: str) -> list[int]:
        """Scan ``text``, which continues what was fed before; offsets of its top-level stop characters."""
        return list(self.scan(text))

    def scan(self, text: str) -> Iterator[int]:
        """``feed`` as a generator, for a caller that wants only the first few stops.

        A caller that stops iterating early must discard the scanner: its state is then mid-chunk.
        """
        yield from self._run(self._tail + text, len(self._tail), self._offset - len(self._tail))
        self._offset += len(text)
        self._tail = (self._tail + text[-2:])[-2:]

    def _run(self, buf: str, i: int, base: int) -> Iterator[int]:
        """Scan ``buf`` from ``i``; buffer position j is stream offset ``base + j`` (nothing before 0 counts)."""
        self._buf, self._base, self._stop = buf, base, -1
        n = len(buf)
        while i < n:
            i = self._handlers[self._state](buf, i)
            if self._stop >= 0:
                yield base + self._stop
                self._stop = -1
        self._buf = ""

    # ------------------------------------------------------------------ helpers

    def _word_before(self, j: int) -> bool:
        """Is buffer position ``j`` a word character of code (not the end of a literal or comment)?"""
        return j >= 0 and self._base + j >= self._token_end and _is_word_char(self._buf[j])

    def _enter(self, state: str, i: int) -> int:
        self._state = state
        return i

    def _close(self, i: int) -> int:
        """A literal, identifier or comment ended just before buffer position ``i``."""
        self._token_end = self._base + i
        return self._enter(_CODE, i)

    # ------------------------------------------------------------------ code

    def _code(self, buf: str, i: int) -> int:
        m = self._code_re.search(buf, i)
        if m is None:
            return len(buf)
        j = m.start()
        c = buf[j]
        if c not in _SPECIAL:
            self._stop = j
            return j + 1
        if c == "'":
            escape = self._word_before(j - 1) and buf[j - 1] in "eE" and not self._word_before(j - 2)
            return self._enter(_ESTRING if escape else _STRING, j + 1)
        if c == '"':
            return self._enter(_IDENT, j + 1)
        if c == "-":
            return self._enter(_CODE_DASH, j + 1)
        if c == "/":
            return self._enter(_CODE_SLASH, j + 1)
        if self._word_before(j - 1):  # '$' inside a name such as a$b
            return j + 1
        self._tag = ""
        return self._enter(_DOLLAR_TAG, j + 1)

    def _code_dash(self, buf: str, i: int) -> int:
        if buf[i] == "-":
            return self._enter(_LINE_COMMENT, i + 1)
        return self._enter(_CODE, i)

    def _code_slash(self, buf: str, i: int) -> int:
        if buf[i] == "*":
            self._depth = 1
            return self._enter(_BLOCK, i + 1)
        return self._enter(_CODE, i)

    def _dollar_tag(self, buf: str, i: int) -> int:
        m = (_TAG_CONT if self._tag else _TAG_START).match(buf, i)
        if m is not None and m.end() > i:
            self._tag += m.group(0)
            return m.end()
        if buf[i] == "$":
            self._body_tail = ""
            return self._enter(_DOLLAR, i + 1)
        return self._enter(_CODE, i)  # '$1' or '$x+': a parameter or a name, not a quote

    # ------------------------------------------------------------------ literals, identifiers, comment bodies

    def _body(self, buf: str, i: int) -> int:
        """Inside a literal, identifier or block comment: on to the next character that matters."""
        stop, leads = _BODY[self._state]
        m = stop.search(buf, i)
        return len(buf) if m is None else self._enter(leads[m.group(0)], m.end())

    def _after_quote(self, buf: str, i: int) -> int:
        quote, body = _REOPEN[self._state]
        return self._enter(body, i + 1) if buf[i] == quote else self._close(i)

    def _estring_backslash(self, buf: str, i: int) -> int:
        return self._enter(_ESTRING, i + 1)

    # ------------------------------------------------------------------ comments and dollar quotes

    def _line_comment(self, buf: str, i: int) -> int:
        m = _LINE_END.search(buf, i)
        return len(buf) if m is None else self._close(m.start())  # the newline itself is code

    def _block_star(self, buf: str, i: int) -> int:
        c = buf[i]
        if c == "/":
            self._depth -= 1
            return self._close(i + 1) if self._depth == 0 else self._enter(_BLOCK, i + 1)
        return i + 1 if c == "*" else self._enter(_BLOCK, i)

    def _block_slash(self, buf: str, i: int) -> int:
        if buf[i] == "*":
            self._depth += 1
            return self._enter(_BLOCK, i + 1)
        return self._enter(_BLOCK, i)

    def _dollar(self, buf: str, i: int) -> int:
        delimiter = f"${self._tag}$"
        keep = len(delimiter) - 1
        if self._body_tail:  # a delimiter split across the chunk boundary
            joined = self._body_tail + buf[i:i + keep]
            k = joined.find(delimiter)
            if k >= 0:
                return self._close(i + k + len(delimiter) - len(self._body_tail))
        k = buf.find(delimiter, i)
        if k >= 0:
            return self._close(k + len(delimiter))
        self._body_tail = (self._body_tail + buf[i:])[-keep:] if keep else ""
        return len(buf)


def top_level(text: str, stops: str = ";", start: int = 0) -> Iterator[int]:
    """Indices in ``text`` of top-level characters matching the class ``stops``, from ``start`` on.

    >>> list(top_level("SELECT ';' AS \\"a;\\"; -- ;\\nSELECT 2;"))
    [18, 33]
    """
    for offset in SqlScanner(stops)._run(text, start, -start):  # no copy of text: linear in what is read
        yield start + offset


def first_statement_end(text: str) -> int | None:
    """Index of the first top-level ``;`` in ``text``, or None while there is none.

    >>> first_statement_end("SELECT E'it\\\\'s; ok' FROM t;")
    26
    >>> first_statement_end("SELECT 'it\\\\'s; ok' FROM t")  # a plain string: the backslash is literal
    13
    """
    return next(top_level(text), None)


def statement_ends(text: str) -> list[int]:
    """Indices of every top-level ``;`` in ``text``.

    >>> statement_ends("SELECT 1; SELECT U&'d\\\\0061t\\\\' AS \\"x;\\"\\"\\"; SELECT 3")
    [8, 39]
    """
    return SqlScanner().feed(text)
