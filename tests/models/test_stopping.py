"""Stopping rules as pure functions: statement end outside quotes, fences, token loops."""

from __future__ import annotations

import pytest

from harness.models.stopping import fence_end, prompt_opens_fence, sql_stop, statement_end, token_loop


@pytest.mark.parametrize(("text", "end"), [
    ("SELECT 1; SELECT 2;", 9),
    ("SELECT ';' AS x;", 16),
    ("SELECT 'it''s; fine';", 21),
    ('SELECT "a;b" FROM t;', 20),
    ("SELECT 1 -- a; comment\nFROM t;", 30),
    ("SELECT /* ; */ 1;", 17),
    ("SELECT $$a;b$$;", 15),
    ("SELECT $tag$;$tag$ ;", 20),
    ("SELECT 'unterminated;", None),
    ("SELECT name FROM poi WHERE type = '公园'", None),
])
def test_statement_end(text, end):
    assert statement_end(text) == end


def test_fences():
    assert fence_end("```sql\nSELECT 1\n```") == 19
    assert fence_end("```sql\nSELECT 1\n") is None
    assert fence_end("SELECT 1\n```", opened=True) == 12
    assert fence_end("Here:\n```sql\nSELECT 1") is None
    assert prompt_opens_fence("### Answer\n```sql\n") and not prompt_opens_fence("```a```\n")


def test_prose_before_the_block_does_not_stop():
    assert not sql_stop("好的; here it is:\n```sql\nSELECT 1")
    assert sql_stop("好的:\n```sql\nSELECT 1;")
    assert sql_stop("SELECT 1\n```", opened=True)


def test_token_loop_on_ids():
    assert token_loop([5, 6, 7] * 3) is not None
    assert token_loop([1, 2, 3, 4, 5, 6, 7, 8, 9]) is None
    assert token_loop(list(range(300)) + [1, 2, 3, 4] * 3) is not None  # only the tail is searched
