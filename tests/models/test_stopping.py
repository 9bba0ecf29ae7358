"""Stopping rules: the incremental checks (``SqlStop``, ``LoopWatch``, ``IncrementalDecoder``) answer
exactly what the whole-text references (``sql_stop``, ``token_loop``, a full decode) answer, however
the text is cut into chunks."""

from __future__ import annotations

import random

import pytest

from harness.models.stopping import (
    LOOP_CHECK_EVERY,
    IncrementalDecoder,
    LoopWatch,
    RowStopper,
    SqlStop,
    fence_end,
    prompt_opens_fence,
    sql_stop,
    token_loop,
)

TEXTS = [
    "SELECT 1; SELECT 2;",
    "SELECT ';' AS x;",
    "SELECT 'it''s; fine' FROM t;",
    'SELECT "a;b" FROM t;',
    "SELECT 1 -- a; comment\nFROM t;",
    "SELECT /* ; /* nested ; */ still */ 1;",
    "SELECT $$a;b$$, $tag$;$tag$ ;",
    "SELECT E'it\\'s; ok' FROM t;",
    "SELECT 'unterminated;",
    "SELECT name FROM poi WHERE type = '公园'",
    "好的; here it is:\n```sql\nSELECT 1;",
    "Here:\n```sql\nSELECT ';'\n```\nmore",
    "``````",
    "prose `` ` ```sql\nSELECT 1\n```",
    "```sql SELECT 1; no newline yet",
    "SELECT 1\n```",
]


def chunkings(text: str, rng: random.Random, n: int = 12):
    yield list(text)  # one character at a time
    yield [text]
    for _ in range(n):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 6))))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("opened", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_sql_stop_incremental_equals_whole_text(text, opened):
    rng = random.Random(text)
    for chunks in chunkings(text, rng):
        rule = SqlStop(opened)
        seen = ""
        for chunk in chunks:
            seen += chunk
            assert rule.push(chunk) == sql_stop(seen, opened), (chunks, seen)
            if sql_stop(seen, opened):
                break


def test_sql_stop_reference():
    assert fence_end("```sql\nSELECT 1\n```") == 19
    assert fence_end("SELECT 1\n```", opened=True) == 12
    assert prompt_opens_fence("### Answer\n```sql\n") and not prompt_opens_fence("```a```\n")
    assert not sql_stop("好的; here it is:\n```sql\nSELECT 1")
    assert sql_stop("好的:\n```sql\nSELECT 1;")
    assert not sql_stop("SELECT E'it\\'s; ok")  # the scanner's escape-string rule, not a second one here


def test_loop_watch_matches_the_windowed_rescan():
    """At every check point (each LOOP_CHECK_EVERY tokens) the latched flag says what token_loop says."""
    rng = random.Random(0)
    seqs = []
    for _ in range(60):
        unit = [rng.randrange(6) for _ in range(rng.randint(1, 70))]
        prefix = [rng.randrange(50) for _ in range(rng.randint(0, 80))]
        seqs.append(prefix + unit * rng.randint(1, 4) + [rng.randrange(50) for _ in range(rng.randint(0, 30))])
    watch = LoopWatch(len(seqs))
    longest = max(map(len, seqs))
    stopped = [False] * len(seqs)
    for n in range(1, longest + 1):
        rows = [r for r, s in enumerate(seqs) if len(s) >= n and not stopped[r]]
        hits = watch.push([seqs[r][n - 1] for r in rows], rows)
        if n % LOOP_CHECK_EVERY:
            continue
        for r in rows:
            assert bool(hits[r]) == (token_loop(seqs[r][:n]) is not None), (r, n)
            stopped[r] = bool(hits[r])
    assert 10 < sum(stopped) < len(seqs)  # both outcomes were exercised


def test_loop_watch_reset_and_select():
    watch = LoopWatch(2)
    for k in range(9):
        watch.push([(1, 2, 3)[k % 3], 100 + k])
    assert watch.hit.tolist() == [True, False]
    watch.reset(0)
    assert watch.hit.tolist() == [False, False]
    watch.select([1])
    assert watch.push([7]).tolist() == [False]


def byte_decode(ids: list[int]) -> str:
    """A byte-fallback tokenizer: each id is one UTF-8 byte (a Chinese character spans three)."""
    return bytes(ids).decode("utf-8", errors="replace")


def test_incremental_decoder_holds_back_partial_characters():
    text = "SELECT '公园';"
    ids = list(text.encode())
    dec = IncrementalDecoder(byte_decode)
    deltas = [dec.push(i) for i in ids]
    assert "".join(deltas) == text
    assert "\ufffd" not in "".join(deltas)
    assert deltas[8:11] == ["", "", "公"]


def test_row_stopper_reasons():
    def make(**kw):
        args = {"eos_ids": frozenset({0}), "max_new_tokens": 20, "decode": byte_decode,
                "sql": SqlStop(), "stop_loop": True}
        return RowStopper(**{**args, **kw})

    s = make()
    assert [s.push(t) for t in b"SELECT 1"] == [None] * 8
    assert s.push(ord(";")) == "stop" and s.ids == list(b"SELECT 1;")
    s = make(sql=None)
    assert s.push(ord(";")) is None and s.push(0) == "stop" and s.ids == [ord(";"), 0]
    s = make(max_new_tokens=3)
    assert [s.push(t) for t in b"abc"] == [None, None, "length"]
    s = make()
    assert s.push(ord("a"), loop_hit=True) is None  # loop verdicts only every LOOP_CHECK_EVERY tokens
    assert [s.push(ord("a"), loop_hit=True) for _ in range(3)] == [None, None, "loop"]
