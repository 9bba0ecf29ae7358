"""The one loader for golden-case files (tests/*/cases/*.tsv and *.jsonl).

Adding a case means adding a line. Each case becomes a ``pytest.param`` whose id is ``file:line`` plus
its comment, so a failure names the line to look at. A malformed line fails loudly, naming file and line.

TSV: a header comment line, then ``gold<TAB>prediction<TAB>expected<TAB>comment``; ``\\n`` in a cell is a
newline; lines starting with ``#`` and blank lines are skipped. JSONL: one JSON object per line with a
``comment`` field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TSV_COLUMNS = ("gold", "prediction", "expected", "comment")


class CaseFileError(ValueError):
    """A golden-case line is malformed."""


def _param(path: Path, number: int, comment: str, *values: Any) -> Any:
    slug = comment.replace(" ", "_")[:60]
    return pytest.param(*values, id=f"{path.name}:{number}:{slug}")


def tsv_cases(path: Path) -> list[Any]:
    """(gold, prediction, expected: bool, comment) per line."""
    params = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) != len(TSV_COLUMNS):
            raise CaseFileError(f"{path}:{number}: expected {len(TSV_COLUMNS)} tab-separated cells "
                                f"({', '.join(TSV_COLUMNS)}), got {len(cells)}")
        gold, prediction, expected, comment = (c.replace("\\n", "\n") for c in cells)
        if expected not in ("true", "false"):
            raise CaseFileError(f"{path}:{number}: field 'expected' must be true or false, got {expected!r}")
        params.append(_param(path, number, comment, gold, prediction, expected == "true", comment))
    return params


def jsonl_cases(path: Path, required: tuple[str, ...]) -> list[Any]:
    """One dict per line; ``required`` fields must be present."""
    params = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as err:
            raise CaseFileError(f"{path}:{number}: invalid JSON ({err})") from err
        for name in required + ("comment",):
            if name not in case:
                raise CaseFileError(f"{path}:{number}: field '{name}' is missing")
        params.append(_param(path, number, case["comment"], case))
    return params
