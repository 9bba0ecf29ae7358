"""When to stop generating one sequence: EOS, the end of the first SQL statement, a closing ``` fence,
or a loop; checked incrementally, so each new token costs O(1) however long the output already is.

Pure text/token logic (numpy, no torch), tested directly; ``harness.models.engine`` feeds it the tokens
each decoding step produces. The statement end comes from the one SQL lexical scanner
(``harness.sql.scanner``), fed only the text each step adds; quotes, comments and dollar quotes are its
business, not this module's.

>>> fence_end("```sql\\nSELECT 1\\n```\\nmore")
19
>>> fence_end("SELECT 1\\n```", opened=True)
12
>>> rule = SqlStop(opened=False)
>>> rule.push("Here it is; "), rule.push("```sql\\nSELECT ';'"), rule.push(" FROM t;")
(True, False, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from harness.diagnose.loops import MIN_REPEATS, MIN_UNIT, Loop, find_loop
from harness.models.base import FinishReason
from harness.sql.scanner import SqlScanner, first_statement_end

LOOP_MAX_UNIT = 64
# Only the tail is searched: a loop that completed earlier was caught at an earlier check.
LOOP_WINDOW = LOOP_MAX_UNIT * MIN_REPEATS + 16
LOOP_CHECK_EVERY = 4  # tokens between loop verdicts (the incremental check is exact at these points)
FENCE = "```"


def fence_end(text: str, opened: bool = False) -> int | None:
    """Index just after the ``` that closes the answer's code block, or None.

    ``opened``: the prompt itself opened the block (it ends in ```sql, as the sqlcoder template does), so
    the first fence in the answer closes it. Otherwise the answer's first fence opens a block (possibly
    after some prose) and the second one closes it.
    """
    first = text.find(FENCE)
    if first == -1:
        return None
    if opened:
        return first + 3
    second = text.find(FENCE, first + 3)
    return None if second == -1 else second + 3


def prompt_opens_fence(prompt: str) -> bool:
    """True when the prompt ends inside an open code block (an odd number of ``` fences)."""
    return prompt.count(FENCE) % 2 == 1


def sql_stop(text: str, opened: bool = False) -> bool:
    r"""True once the text holds a closed fence or a complete first statement (inside the block, if any).

    The whole-text form of ``SqlStop``: the reference its incremental answers are tested against.

    >>> sql_stop("Here it is:\n```sql\nSELECT 1")
    False
    >>> sql_stop("Here it is:\n```sql\nSELECT 1;")
    True
    >>> sql_stop("SELECT 1\n```", opened=True)
    True
    """
    if fence_end(text, opened) is not None:
        return True
    body = text
    if not opened:
        first = text.find(FENCE)
        if first != -1:  # only the statement inside the block counts, not prose before it
            nl = text.find("\n", first)
            body = text[nl + 1:] if nl != -1 else ""
    return first_statement_end(body) is not None


class SqlStop:
    """``sql_stop`` on text that arrives in chunks: ``push(chunk)`` answers ``sql_stop(all text so far)``.

    Each chunk is looked at once: a fence search over the chunk plus the two characters before it, and
    the scanner fed the chunk alone.
    """

    def __init__(self, opened: bool = False) -> None:
        self.opened = opened
        self._scanner = SqlScanner()  # the statement: all text (opened) or, first, the text before any fence
        self._open_seen = opened  # the block is open: the next fence closes it
        self._in_body = opened  # past the newline after the opening fence
        self._tail = ""  # the last two characters of the text the fence search has seen

    def push(self, chunk: str) -> bool:
        if not chunk:
            return False
        joined = self._tail + chunk
        at = joined.find(FENCE)
        if self._open_seen:
            self._tail = joined[-2:]
            return at != -1 or self._feed_body(chunk)
        if at == -1:
            self._tail = joined[-2:]
            return bool(self._scanner.feed(chunk))
        # The answer's first fence opens a block: prose before it does not count, a fresh scanner reads
        # the block from the line after the fence.
        self._open_seen, self._tail, self._scanner = True, "", SqlScanner()
        rest = joined[at + 3:]
        return self.push(rest) if rest else False

    def _feed_body(self, chunk: str) -> bool:
        if not self._in_body:
            nl = chunk.find("\n")
            if nl == -1:
                return False
            self._in_body, chunk = True, chunk[nl + 1:]
        return bool(self._scanner.feed(chunk))


class IncrementalDecoder:
    """The text a growing list of token ids decodes to, delivered as deltas: each ``push`` decodes only
    a short window (the prefix/read offsets of vLLM and TGI), never the whole output.

    A delta is held back while the window ends in an incomplete character (U+FFFD), as when a Chinese
    character spans byte-fallback tokens.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.decode(self.ids[self._prefix:self._read]) if self._read > self._prefix else ""
        now = self.decode(self.ids[self._prefix:])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return now[len(before):]


class LoopWatch:
    """Loop detection for every row of a batch at once, one vectorised update per decoding step.

    For each unit length u in [MIN_UNIT, LOOP_MAX_UNIT] a row keeps the length of its current run of
    positions i with ``ids[i] == ids[i - u]``; a run of ``u * (MIN_REPEATS - 1)`` is a unit repeated
    MIN_REPEATS times back to back, exactly what ``find_loop`` looks for, found at O(1) cost per token
    instead of a rescan of the tail. ``hit`` latches, so a verdict asked every LOOP_CHECK_EVERY tokens
    sees a loop that completed in between (as the windowed rescan did).
    """

    def __init__(self, rows: int) -> None:
        self.units = np.arange(MIN_UNIT, LOOP_MAX_UNIT + 1)
        self.need = self.units * (MIN_REPEATS - 1)
        self._hist = np.empty((rows, LOOP_MAX_UNIT), dtype=np.int64)  # last tokens, newest at the end
        self._runs = np.zeros((rows, len(self.units)), dtype=np.int64)
        self.hit = np.zeros(rows, dtype=bool)
        self._cols = LOOP_MAX_UNIT - self.units  # column of the token u positions back
        for row in range(rows):
            self.reset(row)

    def reset(self, row: int) -> None:
        """A new sequence starts in ``row``: no history (negative ids never equal a token)."""
        self._hist[row] = -1 - np.arange(LOOP_MAX_UNIT)
        self._runs[row] = 0
        self.hit[row] = False

    def push(self, tokens: Sequence[int], rows: Sequence[int] | None = None) -> np.ndarray:
        """Append one token to each row (to ``rows`` only, if given); returns the latched ``hit`` flags,
        one per row of the batch."""
        new = np.asarray(tokens, dtype=np.int64)[:, None]
        at: slice | np.ndarray = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        hist = self._hist[at]
        runs = np.where(hist[:, self._cols] == new, self._runs[at] + 1, 0)
        self._runs[at] = runs
        self.hit[at] |= (runs >= self.need).any(axis=1)
        self._hist[at] = np.concatenate([hist[:, 1:], new], axis=1)
        return self.hit

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (the batch was compacted)."""
        self._hist, self._runs, self.hit = self._hist[rows], self._runs[rows], self.hit[rows]


class RowStopper:
    """Why and when one row stops: EOS, the SQL rule (on decoded deltas), a loop, or max_new_tokens."""

    def __init__(self, *, eos_ids: frozenset[int], max_new_tokens: int, decode: Callable[[list[int]], str],
                 sql: SqlStop | None, stop_loop: bool) -> None:
        self.eos_ids = eos_ids
        self.max_new_tokens = max_new_tokens
        self.text = IncrementalDecoder(decode)
        self.sql = sql
        self.stop_loop = stop_loop

    @property
    def ids(self) -> list[int]:
        return self.text.ids

    def push(self, token: int, loop_hit: bool = False) -> FinishReason | None:
        """Add one generated token; the reason to stop after it, or None to go on."""
        if token in self.eos_ids:
            self.text.ids.append(token)
            return "stop"
        n = len(self.text.ids) + 1
        if self.sql is not None:
            if self.sql.push(self.text.push(token)):
                return "stop"
        else:
            self.text.ids.append(token)
        if self.stop_loop and loop_hit and (n % LOOP_CHECK_EVERY == 0 or n >= self.max_new_tokens):
            return "loop"
        return "length" if n >= self.max_new_tokens else None


def token_loop(ids: Sequence[int]) -> Loop | None:
    """A loop in the tail of generated token ids (``harness.diagnose.loops.find_loop``): the whole-list
    reference for ``LoopWatch``."""
    tail = ids[-LOOP_WINDOW:]
    return find_loop(tail, min_unit=MIN_UNIT, min_repeats=MIN_REPEATS, max_unit=LOOP_MAX_UNIT)
