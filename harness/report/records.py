"""What a run leaves behind: one ``ItemResult`` per question (results.jsonl) and a ``Summary``
(summary.json). The gate and the comparison report read runs back through ``load_run``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import Txt2SqlError
from harness.scoring.status import STATUSES, Status  # noqa: F401  (the one status vocabulary; STATUSES re-exported)


@dataclass(frozen=True)
class ItemResult:
    id: str
    question: str
    gold_sql: str
    raw_output: str
    predicted_sql: str | None
    status: Status
    execution_match: bool | None  # None when the gold failed (gold_error): excluded from scores
    execution_match_superset: bool | None
    exact_match: bool | None
    flags: tuple[str, ...] = ()
    flag_details: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    tags: tuple[str, ...] = ()
    difficulty: str | None = None
    finish_reason: str = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    variants_matched: int = 0  # test-suite execution: on how many data variants the prediction matched
    variants_total: int = 0
    diff: str | None = None  # first differing rows, for humans
    cost_cny: float | None = None  # API price of this item's generation (openai: backends)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        return self.status != "gold_error"

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemResult:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name in ("flags", "tags"):
            kwargs[name] = tuple(kwargs.get(name) or ())
        return cls(**kwargs)


@dataclass(frozen=True)
class TagScore:
    n: int
    execution_accuracy: float


@dataclass(frozen=True)
class Summary:
    n: int
    n_scored: int
    execution_accuracy: float
    execution_accuracy_superset: float
    exact_match: float
    status_counts: dict[str, int]
    flag_counts: dict[str, int]
    by_tag: dict[str, TagScore]
    fixture_intact: bool | None
    benchmark: str
    benchmark_sha256: str
    split: str
    model: str
    model_fingerprint: str = ""
    variants: int = 1
    degenerate_rate: float = 0.0
    refused_rate: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    generation_seconds: float = 0.0  # wall time of generation (CPU/GPU seconds for local backends)
    generation_seconds_per_1k_questions: float = 0.0
    cost_cny: float | None = None
    cost_cny_per_1k_questions: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["by_tag"] = {t: TagScore(**s) for t, s in (kwargs.get("by_tag") or {}).items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class Run:
    path: Path
    summary: Summary
    items: tuple[ItemResult, ...]

    @property
    def label(self) -> str:
        return f"{self.summary.model} ({self.path.name})"


def load_run(path: Path | str) -> Run:
    """Read a run directory (or its summary.json; results.jsonl must sit beside it)."""
    p = Path(path)
    run_dir = p.parent if p.is_file() else p
    summary_path, results_path = run_dir / "summary.json", run_dir / "results.jsonl"
    for needed in (summary_path, results_path):
        if not needed.is_file():
            raise Txt2SqlError(f"{needed}: not found. Pass a run directory written by `txt2sql eval --out DIR`.")
    try:
        summary = Summary.from_dict(json.loads(summary_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise Txt2SqlError(f"{summary_path}: not a txt2sql summary ({exc})") from exc
    items = []
    with results_path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(ItemResult.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise Txt2SqlError(f"{results_path}:{lineno}: not a txt2sql result record ({exc})") from exc
    return Run(run_dir, summary, tuple(items))
