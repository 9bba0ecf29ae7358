"""Reading JSON Lines files (benchmark splits, predictions, imports) with one set of errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import BenchmarkError


def read_jsonl(path: Path, error: type[BenchmarkError] = BenchmarkError) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line. Undecodable bytes, invalid or over-deep JSON
    raise ``error`` naming the file and line; a UTF-8 byte-order mark is tolerated."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(path, f"is not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); save it as UTF-8",
                    line=raw.count(b"\n", 0, exc.start) + 1) from None
    with io.StringIO(text, newline=None) as fh:  # universal newlines, as a text-mode file reads them
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(path, f"invalid JSON ({exc.msg} at column {exc.colno})", line=lineno) from None
            except RecursionError:
                raise error(path, "invalid JSON (nested too deeply)", line=lineno) from None
