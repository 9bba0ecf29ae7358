"""The SQL scanner: PostgreSQL's lexical rules, and the same answer however the text is chunked."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sql.scanner import SqlScanner, first_statement_end, statement_ends, top_level

# (text, offsets of the top-level ';', the mode the text ends in)
CASES = [
    ("SELECT 1; SELECT 2;", [8, 18], "code"),
    ("SELECT 'a;b';", [12], "code"),
    ("SELECT 'it''s; ok';", [18], "code"),
    # standard-conforming strings: the backslash is literal, so 'it\' ends the string
    ("SELECT 'it\\'s; ok'", [13], "string"),
    # escape strings: \' is a quote, \\ a backslash; '' still doubles
    ("SELECT E'it\\'s; ok' FROM t;", [26], "code"),
    ("SELECT e'a\\\\'; x", [13], "code"),
    ("SELECT E'a''; b'", [], "code"),
    ("SELECT E'a\\", [], "escape_string"),
    # the E must begin a token: xE'...' is a name and a plain string
    ("SELECT xE'a\\'; b'", [13], "string"),
    ("SELECT 1E'a\\'; b'", [13], "string"),
    # Unicode strings and identifiers end where plain ones do (backslash starts a Unicode escape)
    ("SELECT U&'d\\0061t\\'; x", [19], "code"),
    ('SELECT U&"d\\0061t\\"; x', [19], "code"),
    ("SELECT U&'a' UESCAPE '!';", [24], "code"),
    ('SELECT "a;""b" FROM t;', [21], "code"),
    ('SELECT "a;', [], "quoted_identifier"),
    ("SELECT 1 -- ;\n;", [14], "code"),
    ("SELECT 1 -- ;\r;", [14], "code"),
    ("SELECT 1 -- ;", [], "line_comment"),
    ("SELECT 1 - -1;", [13], "code"),
    ("SELECT 4/2;", [10], "code"),
    ("SELECT 1 /* a /* b */ ; */ ;", [27], "code"),
    ("SELECT 1 /* a /* b */ ;", [], "block_comment"),
    ("SELECT 1 /*/ ; */ ;", [18], "code"),
    ("SELECT 1 /* **/;", [15], "code"),
    ("SELECT $$a;b$$;", [14], "code"),
    ("SELECT $fn$ a $$ ; $ $fn$;", [25], "code"),
    ("SELECT $fn$ a ;", [], "dollar_quote"),
    ("SELECT $tag_1$;$tag_1$ || $x$;$x$;", [33], "code"),
    ("SELECT $a$x$a$$b$;$b$;", [21], "code"),
    # '$' inside a name or before a digit opens nothing
    ("SELECT a$b$c; SELECT $1;", [12, 23], "code"),
    ("SELECT price$ FROM t; $", [20], "code"),
    ("SELECT '中文;' AS \"名称;\"; ", [21], "code"),
]


@pytest.mark.parametrize(("text", "ends", "mode"), CASES)
def test_postgres_lexical_rules(text: str, ends: list[int], mode: str) -> None:
    scanner = SqlScanner()
    assert scanner.feed(text) == ends
    assert scanner.state == mode
    assert scanner.offset == len(text)


@pytest.mark.parametrize(("text", "ends", "mode"), CASES)
def test_one_character_at_a_time_agrees(text: str, ends: list[int], mode: str) -> None:
    scanner = SqlScanner()
    got = [offset for c in text for offset in scanner.feed(c)]
    assert got == ends
    assert scanner.state == mode


def test_helpers() -> None:
    assert first_statement_end("SELECT E'it\\'s; ok' FROM t;") == 26
    assert first_statement_end("SELECT E'it\\'s; ok' FROM t") is None
    assert statement_ends("SELECT 1; -- ;\nSELECT 2;") == [8, 23]
    assert list(top_level("a;\nb ';\n'\n", stops=";\n", start=1)) == [1, 2, 9]


def test_other_stop_characters_are_reported_at_top_level_only() -> None:
    scanner = SqlScanner(stops="\n`")
    text = "SELECT 'a\n```' -- ```\n\"\n\"\n```"
    assert scanner.feed(text) == [21, 25, 26, 27, 28]


_PIECES = ["SELECT", " ", "x", "E", "e", "U&", "a$b", "$1", "'", "''", "\\", "\\'", '"', '""', ";", "-", "--", "/",
           "/*", "*/", "*", "\n", "\r", "$", "$$", "$t$", "$t", "t$", "中", "E'", "1"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.lists(st.integers(0, 200), max_size=8))
def test_any_chunking_gives_the_same_answer(pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    whole = SqlScanner()
    expected = whole.feed(text)
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    chunked = SqlScanner()
    got: list[int] = []
    for lo, hi in zip(points, points[1:], strict=False):
        got += chunked.feed(text[lo:hi])
    assert got == expected
    assert chunked.state == whole.state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_every_reported_offset_is_a_semicolon(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert all(text[i] == ";" for i in statement_ends(text))


@pytest.mark.parametrize("text", [
    "$" + "a" * 200_000,  # a dollar tag that never closes
    "$a$" + "$a" * 100_000,  # a body full of near-delimiters
    "/*" + "/" * 200_000,
    "E'" + "\\" * 200_000,
    "'" + "''" * 100_000,
    "-" * 200_000,
])
def test_feeding_token_by_token_is_linear(text: str) -> None:
    """200,000 one-character feeds: quadratic work would take minutes; linear takes well under a second."""
    scanner = SqlScanner()
    started = time.perf_counter()
    for c in text:
        scanner.feed(c)
    assert time.perf_counter() - started < 20
    assert scanner.offset == len(text)
