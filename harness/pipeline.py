"""The evaluation pipeline, stage by stage:

benchmark -> database -> prompts -> model -> extraction -> diagnostics -> execution -> scoring -> report

``evaluate`` is what ``txt2sql eval`` and the pytest plugin call. Generation is cached per
(model fingerprint, prompt, generation config), so a re-run re-scores without regenerating and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.benchmark.loader import load_benchmark
from harness.benchmark.model import Question
from harness.db.executor import ConnectionLost, Execution, ResultSet, SafeExecutor
from harness.db.fixture import FixtureDatabases, VariantDatabase
from harness.db.provision import provision
from harness.db.server import Server
from harness.diagnose import diagnose
from harness.errors import InfrastructureError, OutputDirError
from harness.models.base import BackendOptions, Generation, GenerationConfig, ModelBackend, ProgressCallback
from harness.report.records import ItemResult, Summary
from harness.report.summary import summarise
from harness.report.writer import RunWriter
from harness.scoring.exact import exact_match
from harness.scoring.execution import Verdict, execution_match, first_differences
from harness.scoring.normalise import gold_is_ordered
from harness.sql.extract import extract_sql
from harness.sql.schema import SchemaCatalog

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

log = logging.getLogger(__name__)
DEFAULT_MODEL = "embedded"
MAX_INFRA_RETRIES = 3


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
    from harness.models.registry import resolve_template
    from harness.prompts.templates import render_prompt
    template = resolve_template(backend, config.options)
    prompts = [render_prompt(q, template) for q in questions]
    with Progress(config.progress).task(f"generating ({config.model})", len(prompts)) as advance:
        gens = backend.generate(prompts, config.generation, progress=advance)
    return {g.id: g for g in gens}


def evaluate(config: EvalConfig, *, backend: ModelBackend | None = None) -> RunResult:
    benchmark = load_benchmark(config.benchmark, config.split)
    questions = [q for q in benchmark.questions if config.ids is None or q.id in config.ids]
    questions = questions[: config.limit] if config.limit else questions
    out = config.out or default_out_dir(config)
    prepare_output(out)
    own_backend = backend is None
    backend = backend or build_backend(config)
    warnings = list(backend.warnings)
    try:
        with provision(config.db, docker_image=config.docker_image) as server, \
                FixtureDatabases(server, benchmark, statement_timeout_ms=config.statement_timeout_ms) as fixtures:
            before = fixtures.checksums()
            t0 = time.monotonic()
            generations = generate(backend, config, questions)
            gen_seconds = time.monotonic() - t0
            scorer = Scorer(server, fixtures, config)
            writer = RunWriter(out)
            items: list[ItemResult] = []
            try:
                with Progress(config.progress).task("executing + scoring", len(questions)) as advance:
                    for q in questions:
                        item = scorer.score(q, generations.get(q.id) or Generation(q.id, "", error="no generation"))
                        writer.append(item)
                        items.append(item)
                        advance(1)
            finally:
                scorer.close()
            after = fixtures.checksums()
            summary = summarise(items, benchmark=benchmark, model=config.model,
                                fingerprint=backend.fingerprint, fixture_intact=(before == after),
                                variants=max(len(d.variants) for d in benchmark.databases.values()),
                                generation_seconds=gen_seconds, server=server, admin=fixtures)
            writer.finish(summary)
    finally:
        if own_backend:
            backend.close()
    return RunResult(out, summary, tuple(items), tuple(warnings))


class Scorer:
    """Executes gold and prediction on every data variant and scores the prediction."""

    def __init__(self, server: Server, fixtures: FixtureDatabases, config: EvalConfig) -> None:
        self.server = server
        self.fixtures = fixtures
        self.config = config
        self._executors: dict[str, SafeExecutor] = {}
        self._gold_cache: dict[tuple[str, str], Execution] = {}
        self._catalogs: dict[str, SchemaCatalog | None] = {}

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()
        self._executors.clear()

    def _executor(self, vdb: VariantDatabase) -> SafeExecutor:
        if vdb.dbname not in self._executors:
            self._executors[vdb.dbname] = SafeExecutor(self.fixtures.reader(vdb), row_cap=self.config.row_cap,
                                                       statement_timeout_ms=self.config.statement_timeout_ms)
        return self._executors[vdb.dbname]

    def _catalog(self, q: Question) -> SchemaCatalog | None:
        if q.db not in self._catalogs:
            try:
                self._catalogs[q.db] = SchemaCatalog.from_ddl(self.fixtures.benchmark.databases[q.db].schema_sql)
            except Exception as exc:  # a schema sqlglot cannot read only disables the identifier check
                log.warning("schema of %s not parsed for identifier checks: %s", q.db, exc)
                self._catalogs[q.db] = None
        return self._catalogs[q.db]

    def execute(self, vdb: VariantDatabase, sql: str) -> Execution:
        """Run with infrastructure-fault handling: a dead server is restarted and the query retried; a
        query that only killed its own session is an error of that query. Never a silent model failure."""
        for attempt in range(MAX_INFRA_RETRIES + 1):
            try:
                return self._executor(vdb).run(sql)
            except ConnectionLost as exc:
                self._executors.pop(vdb.dbname, None)
                if self.server.is_alive():
                    if attempt >= 1:
                        return Execution("exec_error", error=f"the query broke its own connection: {exc}")
                    continue
                log.warning("database server down (%s); restarting (attempt %d)", exc, attempt + 1)
                if not self.server.recover():
                    raise InfrastructureError(
                        f"the {self.server.kind} PostgreSQL server stopped answering and could not be restarted "
                        f"({exc}). Results so far are in {self.config.out or 'the run directory'}; re-run the same "
                        f"command to resume.\nServer log:\n{self.server.logs()}") from exc
                time.sleep(0.2 * (attempt + 1))
        raise InfrastructureError(f"the database kept failing after {MAX_INFRA_RETRIES} restarts")

    def _gold(self, vdb: VariantDatabase, gold: str) -> Execution:
        key = (vdb.dbname, gold)
        if key not in self._gold_cache:
            self._gold_cache[key] = self.execute(vdb, gold)
        return self._gold_cache[key]

    def score(self, q: Question, gen: Generation) -> ItemResult:
        t0 = time.monotonic()
        extracted = extract_sql(gen.text)
        diagnosis = diagnose(gen.text, extracted, gen.finish_reason, q.question, q.context, self._catalog(q))
        flags = list(diagnosis.flags)
        details = dict(diagnosis.details)
        if gen.error:
            flags.append("backend_error")
            details["backend_error"] = gen.error
        base: dict[str, Any] = dict(id=q.id, question=q.question, gold_sql=q.gold, raw_output=gen.text,
                                    predicted_sql=extracted.sql, tags=q.tags, difficulty=q.difficulty,
                                    finish_reason=gen.finish_reason, tokens_in=gen.tokens_in,
                                    tokens_out=gen.tokens_out, cost_cny=gen.cost_cny)
        timings = {"generate": round(gen.seconds, 4)}
        variants = self.fixtures.variants(q.db)

        # golds first: a failing gold is a benchmark defect, never the model's fault
        gold_runs: list[list[Execution]] = []
        for gold in q.golds:
            gold_runs.append([self._gold(v, gold) for v in variants])
        usable = [i for i, runs in enumerate(gold_runs) if all(r.status == "ok" for r in runs)]
        em = bool(extracted.sql) and any(exact_match(g, extracted.sql or "") for g in q.golds)
        if not usable:
            bad = next(r for r in gold_runs[0] if r.status != "ok")
            return ItemResult(**base, status="gold_error", execution_match=None, execution_match_superset=None,
                              exact_match=None, flags=tuple(flags), flag_details=details,
                              error=f"gold failed ({bad.status}, SQLSTATE {bad.sqlstate}): {bad.error}",
                              variants_total=len(variants), timings=timings)

        def result(status: str, error: str | None = None, matched: int = 0, superset: bool = False,
                   diff: str | None = None) -> ItemResult:
            timings["score"] = round(time.monotonic() - t0, 4)
            return ItemResult(**base, status=status, execution_match=status == "correct",
                              execution_match_superset=superset or status == "correct", exact_match=em,
                              flags=tuple(flags), flag_details=details, error=error, variants_matched=matched,
                              variants_total=len(variants), diff=diff, timings=timings)

        if not extracted.sql:
            return result("no_sql", error=gen.error or "no SQL found in the output")
        if diagnosis.sql_degenerate:
            return result("degenerate", error=details.get("degenerate", "the SQL is a loop"))
        pred_runs: list[Execution] = []
        for v in variants:
            run = self.execute(v, extracted.sql)
            if run.status != "ok":
                timings["execute"] = round(sum(r.seconds for r in pred_runs) + run.seconds, 4)
                return result(run.status, error=(f"SQLSTATE {run.sqlstate}: " if run.sqlstate else "") + (run.error or ""))
            pred_runs.append(run)
        timings["execute"] = round(sum(r.seconds for r in pred_runs), 4)
        preds = [_ok_result(r) for r in pred_runs]
        best_matched, superset_ok, diff = 0, False, None
        for i in usable:
            golds = [_ok_result(r) for r in gold_runs[i]]
            ordered = gold_is_ordered(q.golds[i])
            verdicts = [execution_match(g, p, ordered=ordered) for g, p in zip(golds, preds, strict=True)]
            matched = sum(v.match for v in verdicts)
            supers = all(execution_match(g, p, ordered=ordered, superset=True).match
                         for g, p in zip(golds, preds, strict=True))
            superset_ok = superset_ok or supers
            if matched == len(variants):
                return result("correct", matched=matched, superset=True)
            if matched >= best_matched:
                best_matched = matched
                j = next(k for k, v in enumerate(verdicts) if not v.match)
                diff = _explain(verdicts[j], golds[j], preds[j], variants[j])
        return result("wrong_result", error=diff.splitlines()[0] if diff else None, matched=best_matched,
                      superset=superset_ok, diff=diff)


def _ok_result(run: Execution) -> ResultSet:
    """The rows of an execution whose status is "ok" (the executor always attaches them)."""
    if run.result is None:  # an internal invariant, checked explicitly rather than asserted
        raise RuntimeError(f"internal error: an execution with status {run.status!r} carries no result set")
    return run.result


def _explain(verdict: Verdict, gold: ResultSet, pred: ResultSet, vdb: VariantDatabase) -> str:
    return f"[{vdb.variant}] {verdict.reason}\n{first_differences(gold, pred)}"
