"""The replay backend: model outputs read back from a JSONL file, one ``{"id", "output"}`` per line.

First-class, not a test double: most pipeline tests run on it, and it re-scores outputs produced
elsewhere (another machine, the seed's predictions) without loading a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard, get_args

from harness.benchmark.jsonl import check_unicode, read_jsonl
from harness.errors import ModelBackendError, PredictionsError
from harness.models.base import FinishReason, Generation, ModelBackend

if TYPE_CHECKING:  # used in annotations only
    from harness.models.base import BackendOptions, GenerationConfig, ProgressCallback, Prompt

_FINISH_REASONS = set(get_args(FinishReason))


def _is_finish_reason(value: object) -> TypeGuard[FinishReason]:
    return isinstance(value, str) and value in _FINISH_REASONS


def read_predictions(path: Path) -> dict[str, Generation]:
    """Parse and validate a predictions file; errors name the file, line and field."""
    out: dict[str, Generation] = {}
    first_line: dict[str, int] = {}
    for n, obj in read_jsonl(path, PredictionsError):
        if not isinstance(obj, dict):
            raise PredictionsError(path, "each line must be a JSON object like {\"id\": ..., \"output\": ...}",
                                   line=n)
        if "id" not in obj:
            raise PredictionsError(path, "is missing", line=n, field="id")
        pid = obj["id"]
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise PredictionsError(path, f"must be a string, got {type(pid).__name__}", line=n, field="id")
        pid = str(pid)
        if "output" not in obj:
            raise PredictionsError(path, "is missing", line=n, field="output")
        output = obj["output"]
        if not isinstance(output, str):
            raise PredictionsError(path, f"must be a string, got {type(output).__name__}", line=n,
                                   field="output")
        check_unicode(pid, path, n, "id", PredictionsError)
        check_unicode(output, path, n, "output", PredictionsError)
        reason = obj.get("finish_reason", "stop")
        if not _is_finish_reason(reason):
            raise PredictionsError(path, f"must be one of {', '.join(sorted(_FINISH_REASONS))}, got {reason!r}",
                                   line=n, field="finish_reason")
        if pid in out:
            raise PredictionsError(path, f"duplicate id {pid!r} (first on line {first_line[pid]})", line=n,
                                   field="id")
        first_line[pid] = n
        out[pid] = Generation(id=pid, text=output, finish_reason=reason,
                              tokens_in=_count(obj, "tokens_in", path, n),
                              tokens_out=_count(obj, "tokens_out", path, n))
    return out


def _count(obj: dict[str, object], field: str, path: Path, line: int) -> int:
    """An optional token count: a non-negative integer (12.0 accepted), absent or null meaning 0."""
    value = obj.get(field)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PredictionsError(path, f"must be a non-negative integer, got {value!r}", line=line, field=field)
    return value


class ReplayBackend(ModelBackend):
    """Returns the recorded output for each prompt id; an id absent from the file is a per-item error.

    Not cached: the file already is the record, and its outputs depend on the id, not on the prompt
    (two questions with the same text may have different recorded outputs)."""

    cacheable = False

    def __init__(self, path: Path | str, spec: str | None = None):
        self.path = Path(path)
        self.spec = spec or f"replay:{path}"
        self.template = None  # no preference: prompts are not used
        self.warnings: list[str] = []
        if not self.path.is_file():
            raise ModelBackendError(f"replay file {self.path} does not exist; "
                                    "expected a JSONL file of {\"id\": ..., \"output\": ...} lines")
        self._fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self._predictions = read_predictions(self.path)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        out = []
        for p in prompts:
            g = self._predictions.get(p.id)
            out.append(g if g is not None else
                       Generation(id=p.id, text="", finish_reason="error",
                                  error=f"no prediction for id {p.id} in {self.path}"))
        if progress is not None and prompts:
            progress(len(prompts))
        return out

    def close(self) -> None:
        pass


def load_replay_backend(path: str, options: BackendOptions, *, spec: str | None = None) -> ReplayBackend:
    """``replay:FILE``; no options apply."""
    return ReplayBackend(Path(path).expanduser(), spec=spec)
