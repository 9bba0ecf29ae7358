"""The two loop rules each decide on their own, and a loop after a clean statement is a flag, not a status.

Issue 10 item 15: with the repeated-4-gram rule switched off, or with a looping tail turned into the
``degenerate`` status, every test still passed. These fail under either mutation.
"""

from __future__ import annotations

import pytest

from harness.diagnose import diagnose
from harness.diagnose.loops import (
    SEQ_REP_MIN_TOKENS,
    SEQ_REP_THRESHOLD,
    find_loop,
    is_degenerate,
    seq_rep_n,
    sql_tokens,
)
from harness.sql.extract import extract_sql

# A model that repeats a long condition: the unit (75 tokens) is longer than find_loop's largest unit
# (64), so only the repeated-4-gram rule sees the loop.
_CONDITION = "(" + " AND ".join(f"c{i} = {i}" for i in range(1, 19)) + ")"
LONG_UNIT_LOOP = "SELECT name FROM rfgcpy WHERE " + " OR ".join([_CONDITION] * 3)

CLEAN = "SELECT name FROM rfgcpy WHERE ssqx LIKE '西湖%';"
LOOPING_TAIL = CLEAN + "\n\n### Answer:\n" + "\n\n### Answer:\n".join([CLEAN] * 5)


def test_only_the_repeated_4gram_rule_sees_a_long_unit_loop() -> None:
    tokens = sql_tokens(LONG_UNIT_LOOP)
    assert find_loop(tokens) is None
    assert len(tokens) >= SEQ_REP_MIN_TOKENS and seq_rep_n(tokens) >= SEQ_REP_THRESHOLD
    assert is_degenerate(LONG_UNIT_LOOP) is not None


def test_a_long_unit_loop_is_flagged_and_is_the_degenerate_status() -> None:
    got = diagnose(LONG_UNIT_LOOP, extract_sql(LONG_UNIT_LOOP), "length", "", "", None)
    assert "degenerate" in got.flags
    assert got.sql_degenerate  # the extracted SQL itself loops


def test_a_long_statement_of_distinct_conditions_is_not_a_loop() -> None:
    """The rule's other side: as long, but no repeated 4-grams beyond SQL's own AND/= rhythm."""
    sql = "SELECT name FROM rfgcpy WHERE " + " AND ".join(f"c{i} = {i}" for i in range(1, 60))
    assert is_degenerate(sql) is None
    assert diagnose(sql, extract_sql(sql), "stop", "", "", None).flags == ()


@pytest.mark.parametrize("finish_reason", ["stop", "loop"])
def test_a_looping_tail_after_a_clean_statement_is_a_flag_only(finish_reason: str) -> None:
    extracted = extract_sql(LOOPING_TAIL)
    assert extracted.sql == CLEAN.rstrip(";") and extracted.terminated
    got = diagnose(LOOPING_TAIL, extracted, finish_reason, "", "", None)
    assert got.flags == ("degenerate",)
    assert got.details["degenerate"].startswith("raw:")
    assert not got.sql_degenerate


def test_a_looping_tail_keeps_the_status_the_statement_earns(pg_server, mini_fixtures) -> None:
    """Through the scorer and a real PostGIS: the clean statement is correct; the loop after it is a flag."""
    from harness.models.base import Generation
    from harness.scoring.scorer import Scorer, ScorerOptions

    scorer = Scorer(pg_server, mini_fixtures, ScorerOptions())
    question = next(q for q in mini_fixtures.benchmark.questions if q.id == "names")
    try:
        item = scorer.score(question, Generation("names", LOOPING_TAIL, finish_reason="loop"))
    finally:
        scorer.close()
    assert item.status == "correct"
    assert item.flags == ("degenerate",)
