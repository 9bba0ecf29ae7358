"""What a run leaves behind: one ``ItemResult`` per question (results.jsonl) and a ``Summary``
(summary.json). The gate and the comparison report read runs back through ``load_run``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import RunFileError
from harness.models.base import ModelInfo
from harness.scoring.status import STATUSES, Status  # noqa: F401  (the one status vocabulary; STATUSES re-exported)

if TYPE_CHECKING:
    from harness.gate.gate import Flip, GateDecision
    from harness.models.base import GenerationConfig


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
class RunInfo:
    """What a run ran, so that a reader of summary.json can tell and redo it (as lm-eval records its
    model arguments and generation settings). Shown in the console and HTML headers."""

    model: ModelInfo = field(default_factory=lambda: ModelInfo("", ""))  # its own name, not the spec
    template: str = ""
    max_new_tokens: int = 0
    batch_size: int | str = 0
    greedy: bool = True
    harness_version: str = ""
    git_commit: str | None = None  # of the harness checkout; "+dirty" when it had uncommitted changes

    def describe(self) -> str:
        """One line for headers.

        >>> RunInfo(ModelInfo("SmolLM2-135M-Instruct", "embedded", "bfloat16"), template="seed-zh",
        ...         max_new_tokens=256, batch_size=8, harness_version="0.1.0", git_commit="0123456789ab").describe()
        'SmolLM2-135M-Instruct (embedded, bfloat16), template seed-zh, greedy, max 256 new tokens, batch 8; txt2sql 0.1.0 0123456789ab'
        """
        m = self.model
        if not m.name:
            return "not recorded (a run written before txt2sql recorded its settings)"
        what = ", ".join(x for x in (m.backend, m.dtype) if x)
        adapter = f" + adapter {m.adapter} on {m.adapter_base}" if m.adapter else ""
        decoding = "greedy" if self.greedy else "sampled"
        return (f"{m.name} ({what}){adapter}, template {self.template or '-'}, {decoding}, "
                f"max {self.max_new_tokens} new tokens, batch {self.batch_size}; "
                f"txt2sql {self.harness_version or '?'} {self.git_commit or '(no git checkout)'}")


def run_info(model: ModelInfo, template: str, generation: GenerationConfig) -> RunInfo:
    """The record of a run from its model's description, template and generation settings."""
    return RunInfo(model=model, template=template, max_new_tokens=generation.max_new_tokens, batch_size=generation.batch_size,
                   greedy=generation.temperature == 0, harness_version=_harness_version(),
                   git_commit=_git_commit())


def _harness_version() -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version("txt2sql")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _git_commit() -> str | None:
    """The commit of the checkout the harness runs from, or None when it is not one (a wheel)."""
    import subprocess
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


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
    run: RunInfo = field(default_factory=RunInfo)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["by_tag"] = {t: TagScore(**s) for t, s in (kwargs.get("by_tag") or {}).items()}
        run = {k: v for k, v in (kwargs.get("run") or {}).items() if k in RunInfo.__dataclass_fields__}
        # Older summaries: no run.model (written before runs recorded their settings), or the fingerprint
        # at the top level as model_fingerprint (written before it joined the model's description).
        model = {"name": "", "backend": "", "fingerprint": data.get("model_fingerprint", "")}
        model.update(run.get("model") or {})
        run["model"] = ModelInfo(**{k: v for k, v in model.items() if k in ModelInfo.__dataclass_fields__})
        kwargs["run"] = RunInfo(**run)
        return cls(**kwargs)


@dataclass(frozen=True)
class Run:
    """A run read back (or just finished): its directory, summary and per-question results."""

    path: Path
    summary: Summary
    items: tuple[ItemResult, ...]

    @property
    def label(self) -> str:
        return f"{self.summary.model} ({self.path.name})"


def load_run(path: Path | str, *, require_results: bool = True) -> Run:
    """Read a run directory (or its summary.json). results.jsonl must sit beside it unless
    ``require_results`` is False (a baseline kept as a summary alone: the Run then has no items).
    Errors name the file and line, as for every other JSON Lines file the harness reads."""
    from harness.benchmark.jsonl import read_jsonl

    p = Path(path)
    run_dir = p.parent if p.is_file() else p
    summary_path, results_path = run_dir / "summary.json", run_dir / "results.jsonl"
    hint = "Pass a run directory written by `txt2sql eval --out DIR` or the path of its summary.json."
    for needed in (summary_path, results_path) if require_results else (summary_path,):
        if not needed.is_file():
            raise RunFileError(needed, f"not found. {hint}")
    summary = _load_summary(summary_path)
    if not results_path.is_file():
        return Run(run_dir, summary, ())
    items = []
    for line, obj in read_jsonl(results_path, RunFileError):
        try:
            items.append(ItemResult.from_dict(obj))
        except (AttributeError, TypeError, ValueError) as exc:
            raise RunFileError(results_path, f"not a txt2sql result record ({exc})", line=line) from None
    return Run(run_dir, summary, tuple(items))


def _load_summary(path: Path) -> Summary:
    try:
        return Summary.from_dict(json.loads(path.read_bytes().decode("utf-8-sig")))
    except UnicodeDecodeError as exc:
        raise RunFileError(path, f"is not UTF-8 (byte offset {exc.start}); save it as UTF-8") from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise RunFileError(path, f"not a txt2sql summary ({exc})") from None


# ---- what the reports list, from one or more runs (one definition for Markdown and HTML)

TIMING_ORDER = ("generate", "execute")


def tag_names(runs: Sequence[Run]) -> list[str]:
    """Every tag scored in any run, sorted."""
    return sorted({t for run in runs for t in run.summary.by_tag})


def status_names(runs: Sequence[Run]) -> list[str]:
    """Statuses that occur in any run, in the taxonomy's order (unknown ones last)."""
    seen = {s for run in runs for s, c in run.summary.status_counts.items() if c}
    return [s for s in STATUSES if s in seen] + sorted(seen - set(STATUSES))


def timing_keys(runs: Sequence[Run]) -> list[str]:
    """Timing names recorded per question in any run: generate and execute first, then the rest."""
    seen = {k for run in runs for r in run.items for k in r.timings}
    return [k for k in TIMING_ORDER if k in seen] + sorted(seen - set(TIMING_ORDER))


def tokens_out(run: Run) -> list[float]:
    """Generated tokens per question (all questions: the model generated for gold_error ones too)."""
    return [float(r.tokens_out) for r in run.items]


def timings(run: Run, key: str) -> list[float]:
    return [float(r.timings[key]) for r in run.items if key in r.timings]


def describe(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(median, p90, max) of ``values``, or None when empty.

    >>> describe([1, 2, 3, 4, 100])
    (3.0, 61.6, 100.0)
    """
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    return float(np.median(arr)), round(float(np.quantile(arr, 0.9)), 6), float(arr.max())


def compare_flips(runs: Sequence[Run], decision: GateDecision | None) -> tuple[Flip, ...] | None:
    """The flips between the first two runs: the decision's when given, else computed.

    None when there is nothing to pair (fewer than two runs, or no per-question results).
    """
    if decision is not None:
        return decision.flips if decision.paired else None
    if len(runs) < 2 or not runs[0].items or not runs[1].items:
        return None
    from harness.gate.gate import flips_between  # the gate reads runs: imported when used

    return flips_between(runs[0], runs[1])


def benchmark_mismatch(runs: Sequence[Run]) -> str | None:
    """A warning when the runs are not over one benchmark content and split, else None."""
    keys = {(r.summary.benchmark_sha256, r.summary.split) for r in runs}
    if len(keys) <= 1:
        return None
    parts = ", ".join(f"{r.label}: {r.summary.benchmark}/{r.summary.split} "
                      f"sha256 {r.summary.benchmark_sha256[:12] or '(none)'}" for r in runs)
    return f"the runs are not over the same benchmark and split ({parts}); comparisons are only indicative"
