"""Loop detection: the failure the seed's tuned model showed
(``... WHERE geom AND ssqx AND name AND jsdw AND ... AND geom AND ssqx AND ...``).

A loop is a unit of >= ``min_unit`` tokens repeated back to back >= ``min_repeats`` times. Repeated
*structure* with different values (a CASE WHEN ladder, an IN list of ids) has no identical unit, so it
is not a loop. Works on any hashable tokens: SQL word tokens here, token ids in the stopping criterion.

>>> find_loop("a AND b AND c AND a AND b AND c AND a AND b AND c AND".split()) is not None
True
>>> find_loop("x IN ( 1 , 2 , 3 , 4 , 5 , 6 , 7 , 8 )".split()) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

MIN_UNIT = 3
MIN_REPEATS = 3
# seq-rep-n (Welleck et al.): share of repeated n-grams in a long output.
SEQ_REP_N = 4
SEQ_REP_MIN_TOKENS = 60
SEQ_REP_THRESHOLD = 0.6


@dataclass(frozen=True)
class Loop:
    start: int  # token index where the first copy of the unit begins
    unit: int  # unit length in tokens
    repeats: int

    def describe(self, tokens: Sequence[Hashable]) -> str:
        unit = " ".join(str(t) for t in tokens[self.start:self.start + self.unit])
        return f"'{unit}' repeated {self.repeats}x"


def find_loop(tokens: Sequence[Hashable], min_unit: int = MIN_UNIT, min_repeats: int = MIN_REPEATS,
              max_unit: int = 64) -> Loop | None:
    """The earliest-ending run of a unit repeated back to back, or None."""
    n = len(tokens)
    best: Loop | None = None
    for unit in range(min_unit, min(max_unit, n // min_repeats) + 1):
        run = 0  # number of positions i where tokens[i] == tokens[i - unit], consecutively
        for i in range(unit, n):
            if tokens[i] == tokens[i - unit]:
                run += 1
                if run >= unit * (min_repeats - 1):
                    start = i - run - unit + 1
                    repeats = (run + unit) // unit
                    # extend to the full run for reporting
                    j = i + 1
                    while j < n and tokens[j] == tokens[j - unit]:
                        j += 1
                    repeats = (j - start) // unit
                    cand = Loop(start, unit, repeats)
                    if best is None or (start + unit * min_repeats) < (best.start + best.unit * min_repeats):
                        best = cand
                    break
            else:
                run = 0
    return best


def seq_rep_n(tokens: Sequence[Hashable], n: int = SEQ_REP_N) -> float:
    """1 - (distinct n-grams / n-grams): 0 for no repetition, near 1 for a pure loop."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'?|\"[^\"]*\"?|\d+(?:\.\d+)?|\w+|[^\s\w]", re.UNICODE)


def sql_tokens(text: str) -> list[str]:
    """Word-level tokens of SQL text; keywords are case-folded so 'AND' and 'and' repeat alike."""
    return [t.lower() if t[0].isalpha() else t for t in _SQL_TOKEN.findall(text)]


def is_degenerate(text: str) -> Loop | None:
    """A loop in SQL text, or a long output dominated by repeated 4-grams."""
    tokens = sql_tokens(text)
    loop = find_loop(tokens)
    if loop is not None:
        return loop
    if len(tokens) >= SEQ_REP_MIN_TOKENS and seq_rep_n(tokens) >= SEQ_REP_THRESHOLD:
        return Loop(0, SEQ_REP_N, len(tokens) // SEQ_REP_N)
    return None
