"""When to stop generating one sequence: end of the first SQL statement, a closing ``` fence, or a loop.

Pure text/token logic (no torch), so it is tested directly; ``harness.models.hf`` wraps it in a
transformers ``StoppingCriteria`` that answers per row of a batch.

>>> statement_end("SELECT 'a;b' FROM t; SELECT 2")
20
>>> statement_end("SELECT 1") is None
True
>>> fence_end("```sql\\nSELECT 1\\n```\\nmore")
19
>>> fence_end("SELECT 1\\n```", opened=True)
12
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.diagnose.loops import MIN_REPEATS, MIN_UNIT, Loop, find_loop

LOOP_MAX_UNIT = 64
# Only the tail is searched: a loop that completed earlier was caught at an earlier check.
LOOP_WINDOW = LOOP_MAX_UNIT * MIN_REPEATS + 16
LOOP_CHECK_EVERY = 4  # tokens between loop checks; find_loop is pure Python


def statement_end(text: str) -> int | None:
    """Index just after the first ``;`` outside quotes, dollar quotes and comments, or None."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in ("'", '"'):
            j = text.find(c, i + 1)
            while j != -1 and j + 1 < n and text[j + 1] == c:  # '' and "" escapes
                j = text.find(c, j + 2)
            if j == -1:
                return None
            i = j + 1
        elif c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            if j == -1:
                return None
            i = j + 1
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j == -1:
                return None
            i = j + 2
        elif c == "$":
            j = text.find("$", i + 1)
            tag = text[i:j + 1] if j != -1 else ""
            if tag and (tag == "$$" or tag[1:-1].isidentifier()):
                k = text.find(tag, j + 1)
                if k == -1:
                    return None
                i = k + len(tag)
            else:
                i += 1
        elif c == ";":
            return i + 1
        else:
            i += 1
    return None


def fence_end(text: str, opened: bool = False) -> int | None:
    """Index just after the ``` that closes the answer's code block, or None.

    ``opened``: the prompt itself opened the block (it ends in ```sql, as the sqlcoder template does), so
    the first fence in the answer closes it. Otherwise the answer's first fence opens a block (possibly
    after some prose) and the second one closes it.
    """
    first = text.find("```")
    if first == -1:
        return None
    if opened:
        return first + 3
    second = text.find("```", first + 3)
    return None if second == -1 else second + 3


def prompt_opens_fence(prompt: str) -> bool:
    """True when the prompt ends inside an open code block (an odd number of ``` fences)."""
    return prompt.count("```") % 2 == 1


def sql_stop(text: str, opened: bool = False) -> bool:
    r"""True once the text holds a closed fence or a complete first statement (inside the block, if any).

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
        first = text.find("```")
        if first != -1:  # only the statement inside the block counts, not prose before it
            nl = text.find("\n", first)
            body = text[nl + 1:] if nl != -1 else ""
    return statement_end(body) is not None


def token_loop(ids: Sequence[int]) -> Loop | None:
    """A loop in the tail of generated token ids (``harness.diagnose.loops.find_loop``)."""
    tail = ids[-LOOP_WINDOW:]
    return find_loop(tail, min_unit=MIN_UNIT, min_repeats=MIN_REPEATS, max_unit=LOOP_MAX_UNIT)
