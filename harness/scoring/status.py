"""The status and flag vocabulary: the one definition every stage and report imports.

Each question gets exactly one ``Status``; each member carries how reports show it (a rich style for
the console, a colour for the HTML plots), so a new status cannot be added without its look, and no
report keeps a list of its own. Flags are many per question (``FLAGS``): the diagnosis stage's flags
plus ``backend_error``, which the pipeline adds when the model backend failed on an item.

This module imports nothing from the harness, so any stage may use it.

>>> Status("wrong_result") is Status.WRONG_RESULT
True
>>> Status.CORRECT == "correct", str(Status.GOLD_ERROR), Status.GOLD_ERROR.scored
(True, 'gold_error', False)
"""

from __future__ import annotations

from enum import Enum
from typing import Literal


class Status(str, Enum):
    """One per question (README "status"). A ``str``: results.jsonl and summary.json hold the value."""

    style: str
    color: str
    meaning: str

    CORRECT = ("correct", "green", "#2e7d32", "execution match on every data variant")
    WRONG_RESULT = ("wrong_result", "yellow", "#f9a825", "ran, different result")
    EXEC_ERROR = ("exec_error", "red", "#c62828", "the database rejected it (SQLSTATE recorded)")
    TIMEOUT = ("timeout", "magenta", "#6a1b9a", "cancelled by statement_timeout (SQLSTATE 57014)")
    REFUSED = ("refused", "bright_red", "#ad1457", "not a single read-only query; never sent")
    NO_SQL = ("no_sql", "bright_black", "#757575", "empty output, or no SQL found")
    DEGENERATE = ("degenerate", "bold red", "#4e342e", "the extracted SQL itself is a loop")
    GOLD_ERROR = ("gold_error", "cyan", "#00838f", "the gold failed; excluded from all rates")

    def __new__(cls, value: str, style: str, color: str, meaning: str) -> Status:
        member = str.__new__(cls, value)
        member._value_ = value
        member.style, member.color, member.meaning = style, color, meaning
        return member

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def of(cls, value: str) -> Status:
        """The member named by ``value`` (``Status("timeout")`` works too; mypy reads the constructor as
        taking the look as well)."""
        return cls(value)  # type: ignore[call-arg]

    @property
    def scored(self) -> bool:
        """Counted in every rate (all but ``gold_error``, a benchmark defect)."""
        return self is not Status.GOLD_ERROR


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)  # the values, in the taxonomy's order
STATUS_STYLES: dict[str, str] = {s.value: s.style for s in Status}
STATUS_COLORS: dict[str, str] = {s.value: s.color for s in Status}

# What the executor reports for one query: "ok" (rows came back) or the status the question then gets.
ExecStatus = Literal["ok", "exec_error", "timeout", "refused"]

DIAGNOSIS_FLAGS: tuple[str, ...] = ("degenerate", "truncated", "unknown_column", "unknown_table",
                                    "invented_literal")
FLAGS: tuple[str, ...] = DIAGNOSIS_FLAGS + ("backend_error",)
