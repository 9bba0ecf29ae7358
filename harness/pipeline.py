"""The evaluation pipeline, stage by stage:

benchmark -> database -> prompts -> model -> extraction -> diagnostics -> execution -> scoring -> report

``evaluate`` is what ``txt2sql eval`` and the pytest plugin call. Generation is cached per
(model fingerprint, prompt, generation config), so a re-run re-scores without regenerating and an
interrupted run resumes where it stopped. The database is prepared in a thread while the model loads
(``harness.db.preparation``); everything else runs in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness import distributed
from harness.benchmark.loader import load_benchmark
from harness.benchmark.model import Benchmark, Question
from harness.db.preparation import DatabasePreparation
from harness.db.provision import provision
from harness.errors import OutputDirError
from harness.gcpause import EvaluationHeap
from harness.models.base import BackendOptions, Generation, GenerationConfig, ModelBackend, ProgressCallback
from harness.models.registry import resolve_template
from harness.report.background import BackgroundReport
from harness.report.records import ItemResult, Summary, run_info
from harness.report.summary import summarise
from harness.report.writer import RunWriter
from harness.scoring.scorer import Scorer, ScorerOptions

__all__ = ["EvalConfig", "RunResult", "Scorer", "build_backend", "evaluate", "generate"]

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

log = logging.getLogger(__name__)
DEFAULT_MODEL = "embedded"


@dataclass(frozen=True)
class EvalConfig:
    benchmark: Path
    split: str = "test"
    model: str = DEFAULT_MODEL
    db: str = "auto"
    out: Path | None = None
    options: BackendOptions = field(default_factory=BackendOptions)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    statement_timeout_ms: int = 10_000
    row_cap: int = 100_000
    limit: int | None = None  # first N questions only
    ids: frozenset[str] | None = None  # only these question ids (pytest -k selection)
    cache_dir: Path | None = None  # None: default cache; use_cache=False disables
    use_cache: bool = True
    progress: bool = True
    docker_image: str | None = None  # --db docker: None = TXT2SQL_DOCKER_IMAGE, else the official image


@dataclass(frozen=True)
class RunResult:
    out: Path
    summary: Summary
    items: tuple[ItemResult, ...]
    warnings: tuple[str, ...] = ()
    # wall seconds per stage (see Stages), for benchmarks/perf/overhead.py; not part of the run directory
    stages: dict[str, float] = field(default_factory=dict)


class Stages:
    """Wall seconds per named stage of one evaluation: ``with stages("generate"): ...``. Stages of the
    caller's thread do not overlap; ``databases`` (prepared in its own thread) overlaps ``model load``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - t0


class Progress:
    """rich progress bars, or nothing (tests, --no-progress)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: RichProgress | None = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
            self._progress = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                          TimeElapsedColumn(), TimeRemainingColumn(), transient=False)

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[ProgressCallback]:
        progress = self._progress
        if progress is None:
            def ignore(n: int = 1) -> None:
                return None
            yield ignore
            return
        with progress:
            task_id = progress.add_task(description, total=total)
            def advance(n: int = 1) -> None:
                progress.advance(task_id, n)
            yield advance


def prepare_output(out: Path) -> None:
    """Fail before any generation if the output directory cannot be written (or the disk is full)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".txt2sql-write-test"
        with open(probe, "wb") as fh:
            fh.write(b"x" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise OutputDirError(f"cannot write to output directory {out}: {exc.strerror or exc}. "
                             "Pass a writable --out DIR (and check free disk space).") from exc


def default_out_dir(config: EvalConfig) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in config.model)[:60]
    return Path("runs") / f"{config.benchmark.name}-{config.split}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_backend(config: EvalConfig) -> ModelBackend:
    from harness.models.cache import CachedBackend
    from harness.models.registry import create_backend
    backend = create_backend(config.model, config.options)
    if config.use_cache and backend.cacheable:
        backend = CachedBackend(backend, config.cache_dir)
    return backend


def generate(backend: ModelBackend, config: EvalConfig,
             questions: Sequence[Question]) -> dict[str, Generation]:
    from harness.prompts.templates import render_prompt
    template = resolve_template(backend, config.options)
    prompts = [render_prompt(q, template) for q in questions]
    group = distributed.current()  # torchrun / accelerate launch: this rank's shard, gathered on rank 0
    with Progress(config.progress).task(f"generating ({config.model})", len(prompts)) as advance:
        gens = (backend.generate(prompts, config.generation, progress=advance) if group is None else
                distributed.generate_sharded(backend, prompts, config.generation, advance, group) or [])
    return {g.id: g for g in gens}


def select_questions(config: EvalConfig) -> tuple[Benchmark, list[Question]]:
    """The benchmark and the questions a run evaluates (``ids``, then ``limit``)."""
    benchmark = load_benchmark(config.benchmark, config.split)
    questions = [q for q in benchmark.questions if config.ids is None or q.id in config.ids]
    return benchmark, questions[: config.limit] if config.limit else questions


def evaluate(config: EvalConfig, *, backend: ModelBackend | None = None) -> RunResult:
    stages = Stages()
    benchmark, questions = select_questions(config)
    out = config.out or default_out_dir(config)
    prepare_output(out)
    server = provision(config.db, docker_image=config.docker_image)
    own_backend = backend is None
    with (DatabasePreparation(server, benchmark, statement_timeout_ms=config.statement_timeout_ms) as databases,
          EvaluationHeap() as heap):
        try:
            # beside the database preparation; the collector paused (harness.gcpause)
            with stages("model load"), heap.loading():
                backend = backend or build_backend(config)
            warnings = list(backend.warnings)
            with stages("wait for databases"):  # a database that fails stops the run before generation
                ready = databases.ready()
            fixtures = ready.fixtures
            with stages("generate"):
                generations = generate(backend, config, questions)
            scorer = Scorer(server, fixtures, ScorerOptions(row_cap=config.row_cap, run_dir=out,
                                                            statement_timeout_ms=config.statement_timeout_ms))
            writer = RunWriter(out)
            report = BackgroundReport(out)  # imports the HTML renderer on the other core while the scoring runs
            try:
                items: list[ItemResult] = []
                try:
                    with stages("score"), Progress(config.progress).task("executing + scoring", len(questions)) as advance:
                        for q in questions:
                            item = scorer.score(q, generations.get(q.id) or Generation(q.id, "", error="no generation"))
                            writer.append(item)
                            items.append(item)
                            advance(1)
                finally:
                    scorer.close()
                with stages("summary"):  # the fixture intact until the checksums below say otherwise
                    summary = summarise(items, benchmark=benchmark, model=config.model, fixture_intact=True,
                                        variants=max(len(d.variants) for d in benchmark.databases.values()),
                                        generation_seconds=stages.seconds["generate"], server=server,
                                        admin=fixtures)
                    summary = replace(summary, run=run_info(backend.describe(),
                                                            resolve_template(backend, config.options).name,
                                                            config.generation))
                report.render(summary)  # the page renders in its process while the checksum queries run
                with stages("checksums"):
                    after = fixtures.checksums()
                if after != ready.checksums:
                    summary = replace(summary, fixture_intact=False)
                databases.release()  # the server is torn down while the report is written
                with stages("report"):
                    writer.finish(summary, report)
            finally:
                report.close()
        finally:
            if own_backend and backend is not None:
                backend.close()
    stages.seconds.update({"databases": databases.seconds, "teardown": databases.teardown_seconds})
    return RunResult(out, summary, tuple(items), tuple(warnings), stages.seconds)
