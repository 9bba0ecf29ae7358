"""Reading JSON Lines files (benchmark splits, predictions, imports) and the text files beside them
(a benchmark's schema.sql) with one set of errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import BenchmarkError


def read_text(path: Path, error: type[BenchmarkError] = BenchmarkError) -> str:
    """The file's text with universal newlines, as a text-mode file reads it; a UTF-8 byte-order mark is
    tolerated, undecodable bytes raise ``error`` naming the file and line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(path, f"is not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); save it as UTF-8",
                    line=raw.count(b"\n", 0, exc.start) + 1) from None
    with io.StringIO(text, newline=None) as fh:
        return fh.read()


def read_jsonl(path: Path, error: type[BenchmarkError] = BenchmarkError) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a ``read_text`` file. Undecodable bytes,
    invalid or over-deep JSON raise ``error`` naming the file and line."""
    with io.StringIO(read_text(path, error)) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(path, f"invalid JSON ({exc.msg} at column {exc.colno})", line=lineno) from None
            except RecursionError:
                raise error(path, "invalid JSON (nested too deeply)", line=lineno) from None


def text_field(obj: dict[str, Any], field: str, path: Path, line: int, *, required: bool = True,
               error: type[BenchmarkError] = BenchmarkError) -> str | None:
    """A non-empty string field of one JSON line, or None when optional and absent. Text with a lone
    surrogate (valid JSON, ``"\\ud800"``) is refused here: no file or database can store it."""
    value = obj.get(field)
    if value is None:
        if required:
            raise error(path, "is missing", line=line, field=field)
        return None
    if not isinstance(value, str) or not value.strip():
        raise error(path, "must be a non-empty string", line=line, field=field)
    check_unicode(value, path, line, field, error)
    return value


def check_unicode(value: str, path: Path, line: int, field: str,
                  error: type[BenchmarkError] = BenchmarkError) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(path, f"is not valid Unicode (a lone surrogate at character {exc.start})",
                    line=line, field=field) from None

