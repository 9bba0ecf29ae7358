"""The harness's own exceptions. Each message says where the problem is and how to fix it."""

from __future__ import annotations

from pathlib import Path


class Txt2SqlError(Exception):
    """Base class: anything the user can act on."""


class BenchmarkError(Txt2SqlError):
    """A benchmark directory or file is malformed. Names file, line and field."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None):
        self.path = Path(path)
        self.line = line
        self.field = field
        where = f"{path}:{line}" if line is not None else f"{path}"
        what = f"field '{field}' " if field else ""
        super().__init__(f"{where}: {what}{message}")


class PredictionsError(BenchmarkError):
    """A replay/predictions file is malformed."""


class RunFileError(BenchmarkError):
    """A run directory's results.jsonl or summary.json is missing or malformed."""


class ProvisionError(Txt2SqlError):
    """A database could not be provided (local cluster, docker or DSN)."""


class InfrastructureError(Txt2SqlError):
    """The database or machine failed while evaluating: never a model failure."""


class ModelBackendError(Txt2SqlError):
    """A model backend could not be created or used."""


class OutputDirError(Txt2SqlError):
    """The output directory cannot be written."""


class GateError(Txt2SqlError):
    """Two runs cannot be compared (different benchmark or split)."""
