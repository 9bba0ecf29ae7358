"""Scoring one question on every data variant of its database: its golds first, then its prediction.

* **Gold scoring** (``GoldRuns``): every alternative gold on every variant, cached per (database, gold).
  A question none of whose golds runs cleanly on every variant is a benchmark defect, ``gold_error``,
  never counted against the model.
* **Prediction scoring**: the output is extracted and parsed once (sqlglot); that one tree goes to the
  diagnosis (schema check), the guard and exact match. The prediction then runs on every variant and is
  judged against each usable gold by ``judge``, a pure function of result sets. The item reports
  against the gold that decided it: the one it matched, or else the closest (most variants matched,
  the first on a tie), and says how many alternatives were tried.

``Scorer`` is the only part with I/O (the executors and the server's recovery).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.benchmark.model import Question
from harness.db.executor import (
    DEFAULT_ROW_CAP,
    DEFAULT_STATEMENT_TIMEOUT_MS,
    ConnectionLost,
    Execution,
    ResultSet,
    SafeExecutor,
    Verdicts,
)
from harness.diagnose import Diagnosis, diagnose
from harness.errors import InfrastructureError
from harness.models.base import Generation
from harness.report.records import ItemResult
from harness.scoring.exact import exact_match, parse_statement
from harness.scoring.execution import execution_match, first_differences
from harness.scoring.normalise import gold_is_ordered
from harness.scoring.status import Status
from harness.sql.extract import Extracted, extract_sql
from harness.sql.schema import SchemaCatalog

if TYPE_CHECKING:
    from sqlglot import exp

    from harness.db.fixture import FixtureDatabases, VariantDatabase
    from harness.db.server import Server

log = logging.getLogger(__name__)
MAX_INFRA_RETRIES = 3


@dataclass(frozen=True)
class ScorerOptions:
    row_cap: int = DEFAULT_ROW_CAP
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    run_dir: Path | None = None  # named when the server dies for good, so the user can resume


@dataclass(frozen=True)
class GoldRuns:
    """Every gold of one question on every variant: ``runs[gold][variant]``."""

    golds: tuple[str, ...]
    runs: tuple[tuple[Execution, ...], ...]

    @property
    def usable(self) -> tuple[int, ...]:
        """The golds that ran cleanly on every variant."""
        return tuple(i for i, runs in enumerate(self.runs) if all(r.status == "ok" for r in runs))

    def failure(self, labels: Sequence[str]) -> str | None:
        """Why the question is a ``gold_error`` (the first failure of the first gold), or None."""
        if self.usable:
            return None
        variant, bad = next((j, r) for j, r in enumerate(self.runs[0]) if r.status != "ok")
        which = f": all {len(self.golds)} golds fail; the first" if len(self.golds) > 1 else ""
        return f"gold failed{which} on {labels[variant]} ({bad.status}, SQLSTATE {bad.sqlstate}): {bad.error}"


@dataclass(frozen=True)
class Prediction:
    """What was read from one output before anything ran: the SQL, its one parse, its diagnosis."""

    extracted: Extracted
    parsed: exp.Expr | None
    diagnosis: Diagnosis
    flags: tuple[str, ...]
    details: dict[str, str] = field(hash=False)

    @property
    def sql(self) -> str | None:
        return self.extracted.sql


@dataclass(frozen=True)
class Judgement:
    """The outcome for one question. ``gold`` indexes the gold that ``error`` and ``diff`` describe."""

    status: Status
    error: str | None = None
    matched: int = 0  # data variants on which the prediction matched that gold
    superset: bool = False
    diff: str | None = None
    gold: int = 0
    golds_tried: int = 0
    execute_seconds: float | None = None  # None: the prediction was not executed


def judge(golds: GoldRuns, preds: Sequence[ResultSet], labels: Sequence[str]) -> Judgement:
    """Compare the prediction's results (one per variant) with every usable gold's. Pure.

    Row order matters when the *gold's* outermost query has ORDER BY, decided per gold. ``correct``
    needs a match on every variant against one gold; otherwise the report names the closest gold.
    """
    best: Judgement | None = None
    superset_ok = False
    usable = golds.usable
    for i in usable:
        gold_results = [_rows(r) for r in golds.runs[i]]
        ordered = gold_is_ordered(golds.golds[i])
        verdicts = [execution_match(g, p, ordered=ordered) for g, p in zip(gold_results, preds, strict=True)]
        superset_ok = superset_ok or all(execution_match(g, p, ordered=ordered, superset=True).match
                                         for g, p in zip(gold_results, preds, strict=True))
        matched = sum(v.match for v in verdicts)
        if matched == len(verdicts):
            return Judgement(Status.CORRECT, matched=matched, superset=True, gold=i, golds_tried=len(usable))
        if best is None or matched > best.matched:
            j = next(k for k, v in enumerate(verdicts) if not v.match)
            diff = f"[{labels[j]}] {verdicts[j].reason}\n{first_differences(gold_results[j], preds[j])}"
            best = Judgement(Status.WRONG_RESULT, matched=matched, diff=diff, gold=i)
    if best is None:  # GoldRuns.failure is checked first; kept explicit rather than asserted
        raise RuntimeError("internal error: judge() called without a usable gold")
    diff = best.diff or ""
    if len(golds.golds) > 1:
        head, _, rest = diff.partition("\n")
        diff = (f"{head} (against gold {best.gold + 1}, the closest of {len(usable)} alternative golds "
                f"tried)\n{rest}")
    return replace(best, diff=diff, error=diff.splitlines()[0], superset=superset_ok, golds_tried=len(usable))


def _rows(run: Execution) -> ResultSet:
    """The rows of an execution whose status is "ok" (the executor always attaches them)."""
    if run.result is None:  # an internal invariant, checked explicitly rather than asserted
        raise RuntimeError(f"internal error: an execution with status {run.status!r} carries no result set")
    return run.result


class Scorer:
    """Executes gold and prediction on every data variant and scores the prediction."""

    def __init__(self, server: Server, fixtures: FixtureDatabases, options: ScorerOptions) -> None:
        self.server = server
        self.fixtures = fixtures
        self.options = options
        self._executors: dict[tuple[str, bool], SafeExecutor] = {}  # (database, gold?) -> its executor
        self._gold_cache: dict[tuple[str, str], Execution] = {}
        self._gold_trees: dict[str, exp.Expr | None] = {}  # gold text -> its one parse (guard, exact match)
        self._verdicts: Verdicts = {}  # the guard's decisions, shared by every variant's executor
        self._catalogs: dict[str, SchemaCatalog | None] = {}

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()
        self._executors.clear()

    def _executor(self, vdb: VariantDatabase, *, gold: bool) -> SafeExecutor:
        """Predictions get a fresh session per query. Golds, the benchmark's own SQL, share one session per
        database while they run cleanly: they pass the same guard and run in the same read-only, rolled-back
        transactions, and sharing saves a backend start per gold (about 4 s of a Hangzhou run)."""
        key = (vdb.dbname, gold)
        if key not in self._executors:
            # the allow-list built at provisioning: no executor (nor a restarted one) reads pg_proc again
            self._executors[key] = SafeExecutor(self.fixtures.reader(vdb), row_cap=self.options.row_cap,
                                                statement_timeout_ms=self.options.statement_timeout_ms,
                                                functions=self.fixtures.functions(vdb), shared_session=gold,
                                                verdicts=self._verdicts)
        return self._executors[key]

    def _catalog(self, q: Question) -> SchemaCatalog | None:
        if q.db not in self._catalogs:
            try:
                self._catalogs[q.db] = SchemaCatalog.from_ddl(self.fixtures.benchmark.databases[q.db].schema_sql)
            except Exception as exc:  # a schema sqlglot cannot read only disables the identifier check
                log.warning("schema of %s not parsed for identifier checks: %s", q.db, exc)
                self._catalogs[q.db] = None
        return self._catalogs[q.db]

    def execute(self, vdb: VariantDatabase, sql: str, *, parsed: exp.Expr | None = None,
                budget_ms: float | None = None, gold: bool = False) -> Execution:
        """Run with infrastructure-fault handling: a dead server is restarted and the query retried; a
        query that only killed its own session is an error of that query. Never a silent model failure.
        ``parsed``: ``sql`` as ``parse_statement`` parsed it, handed to the guard so it does not parse again."""
        for attempt in range(MAX_INFRA_RETRIES + 1):
            try:
                return self._executor(vdb, gold=gold).run(sql, parsed=parsed, budget_ms=budget_ms)
            except ConnectionLost as exc:
                self._executors.pop((vdb.dbname, gold), None)
                if self.server.is_alive():
                    if attempt >= 1:
                        return Execution("exec_error", error=f"the query broke its own connection: {exc}")
                    continue
                log.warning("database server down (%s); restarting (attempt %d)", exc, attempt + 1)
                if not self.server.recover():
                    raise InfrastructureError(
                        f"the {self.server.kind} PostgreSQL server stopped answering and could not be restarted "
                        f"({exc}). Results so far are in {self.options.run_dir or 'the run directory'}; re-run "
                        f"the same command to resume.\nServer log:\n{self.server.logs()}") from exc
                time.sleep(0.2 * (attempt + 1))
        raise InfrastructureError(f"the database kept failing after {MAX_INFRA_RETRIES} restarts")

    def gold_runs(self, q: Question) -> GoldRuns:
        """Gold scoring: every gold on every variant (each (database, gold) runs once per evaluation, and is
        parsed once for all its variants)."""
        variants = self.fixtures.variants(q.db)
        runs = []
        for gold in q.golds:
            todo = [vdb for vdb in variants if (vdb.dbname, gold) not in self._gold_cache]
            tree = self._gold_tree(gold) if todo else None
            for vdb in todo:
                self._gold_cache[vdb.dbname, gold] = self.execute(vdb, gold, parsed=tree, gold=True)
            runs.append(tuple(self._gold_cache[vdb.dbname, gold] for vdb in variants))
        return GoldRuns(q.golds, tuple(runs))

    def _gold_tree(self, gold: str) -> exp.Expr | None:
        """A gold parsed once per evaluation: the tree the guard checks on every variant, and exact match's."""
        if gold not in self._gold_trees:
            self._gold_trees[gold] = parse_statement(gold)
        return self._gold_trees[gold]

    def read(self, q: Question, gen: Generation) -> Prediction:
        """Extraction, the one parse, and the diagnosis of an output (no database)."""
        extracted = extract_sql(gen.text)
        parsed = parse_statement(extracted.sql) if extracted.sql else None
        diagnosis = diagnose(gen.text, extracted, gen.finish_reason, q.question, q.context, self._catalog(q),
                             parsed=parsed)
        flags, details = tuple(diagnosis.flags), dict(diagnosis.details)
        if gen.error:
            flags += ("backend_error",)
            details["backend_error"] = gen.error
        return Prediction(extracted, parsed, diagnosis, flags, details)

    def score(self, q: Question, gen: Generation) -> ItemResult:
        t0 = time.monotonic()
        prediction = self.read(q, gen)
        labels = self.labels(q)
        golds = self.gold_runs(q)
        failure = golds.failure(labels)
        if failure is not None:
            judgement = Judgement(Status.GOLD_ERROR, error=failure, golds_tried=len(q.golds))
            exact = None
        else:
            judgement = self.judge_prediction(q, gen, prediction, golds, labels)
            exact = bool(prediction.sql) and any(exact_match(g, prediction.sql or "", parsed=prediction.parsed,
                                                             pred_parses=prediction.parsed is not None,
                                                             gold_parsed=self._gold_tree(g)) for g in q.golds)
        timings = {"generate": round(gen.seconds, 4)}
        if judgement.execute_seconds is not None:
            timings["execute"] = round(judgement.execute_seconds, 4)
        timings["score"] = round(time.monotonic() - t0, 4)
        return item_result(q, gen, prediction, judgement, exact=exact, variants=len(labels), timings=timings)

    def labels(self, q: Question) -> list[str]:
        """The data variants' names as diffs and errors show them (``data/v1.sql``, ``schema.sql``)."""
        spec = self.fixtures.benchmark.databases[q.db]
        return [spec.variant_label(v.variant) for v in self.fixtures.variants(q.db)]

    def judge_prediction(self, q: Question, gen: Generation, prediction: Prediction, golds: GoldRuns,
                         labels: Sequence[str]) -> Judgement:
        """Prediction scoring, once the golds are known to be usable."""
        sql = prediction.sql
        if not sql:
            return Judgement(Status.NO_SQL, error=gen.error or "no SQL found in the output")
        if prediction.diagnosis.sql_degenerate:
            return Judgement(Status.DEGENERATE, error=prediction.details.get("degenerate", "the SQL is a loop"))
        runs: list[Execution] = []
        for vdb in self.fixtures.variants(q.db):  # one time budget for the question, over all variants
            spent_ms = 1000 * sum(r.seconds for r in runs)
            run = self.execute(vdb, sql, parsed=prediction.parsed,
                               budget_ms=self.options.statement_timeout_ms - spent_ms)
            runs.append(run)
            if run.status != "ok":
                sqlstate = f"SQLSTATE {run.sqlstate}: " if run.sqlstate else ""
                return Judgement(Status.of(run.status), error=sqlstate + (run.error or ""),
                                 execute_seconds=sum(r.seconds for r in runs))
        return replace(judge(golds, [_rows(r) for r in runs], labels), execute_seconds=sum(r.seconds for r in runs))


def item_result(q: Question, gen: Generation, prediction: Prediction, judgement: Judgement, *,
                exact: bool | None, variants: int, timings: dict[str, float]) -> ItemResult:
    """The record of one question, reported against the gold the judgement names."""
    scored = judgement.status.scored
    correct = judgement.status is Status.CORRECT
    return ItemResult(
        id=q.id, question=q.question, gold_sql=q.golds[judgement.gold], raw_output=gen.text,
        predicted_sql=prediction.sql, status=judgement.status,
        execution_match=correct if scored else None,
        execution_match_superset=(judgement.superset or correct) if scored else None,
        exact_match=exact, flags=prediction.flags, flag_details=prediction.details, error=judgement.error,
        tags=q.tags, difficulty=q.difficulty, finish_reason=gen.finish_reason, tokens_in=gen.tokens_in,
        tokens_out=gen.tokens_out, variants_matched=judgement.matched, variants_total=variants,
        diff=judgement.diff, cost_cny=gen.cost_cny, timings=timings,
    )
