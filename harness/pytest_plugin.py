"""pytest plugin: ``pytest benchmarks/ --model=lora:checkpoint-1600``.

Each question of a benchmark is one test item named by its id and tags (so ``-k spatial`` selects the
spatial questions and JUnit XML lists per-question results). Generation, execution and scoring happen
once per session, in batch, for the selected items only; each item then reports its own verdict. The
session writes the same results.jsonl / summary.json as ``txt2sql eval``.

A benchmark is collected from a ``*.txt2sql.json`` file such as ``benchmarks/hangzhou.txt2sql.json``::

    {"benchmark": "../fixtures/hangzhou", "split": "test"}

(paths relative to that file; ``--benchmark`` and ``--split`` override them).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import Txt2SqlError

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

SPEC_SUFFIX = ".txt2sql.json"


@dataclass
class SessionState:
    results: dict[str, Any] = field(default_factory=dict)  # spec path -> RunResult
    errors: dict[str, str] = field(default_factory=dict)
    gate: Any = None


state_key = pytest.StashKey[SessionState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The same options as ``txt2sql eval`` and ``txt2sql gate``, from the one table in harness.options."""
    from harness.options import add_to_pytest
    add_to_pytest(parser.getgroup("txt2sql", "txt2sql text-to-SQL benchmark"))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[state_key] = SessionState()


def _refuse_launchers() -> None:
    """Under torchrun / accelerate launch every rank would run the whole benchmark: say so and stop."""
    from harness.distributed import from_env

    if from_env() is not None:
        raise pytest.UsageError("the txt2sql pytest plugin runs as one process, not under torchrun or accelerate "
                                "launch (WORLD_SIZE > 1): shard with `torchrun -m harness eval ...`, then gate "
                                "with `txt2sql gate`")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SPEC_SUFFIX):
        _refuse_launchers()
        return BenchmarkFile.from_parent(parent, path=file_path)
    return None


class BenchmarkFile(pytest.File):
    def spec(self) -> tuple[Path, str]:
        from harness.options import option
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise Txt2SqlError(f"{self.path}: invalid JSON ({exc})") from exc
        opt = self.config.getoption
        bench = Path(opt("benchmark")) if opt("benchmark") else (self.path.parent / data.get("benchmark", ".")).resolve()
        return bench, opt("split") or data.get("split") or option("--split").default()

    def collect(self):  # type: ignore[override]
        from harness.benchmark.loader import load_benchmark
        bench, split = self.spec()
        benchmark = load_benchmark(bench, split)
        for q in benchmark.questions:
            name = f"{q.id}[{'-'.join(q.tags) or 'untagged'}]"
            item = QuestionItem.from_parent(self, name=name, question=q)
            for tag in q.tags:
                item.keywords[tag] = True
            yield item


class QuestionFailure(Exception):
    def __init__(self, item_result: Any) -> None:
        super().__init__(item_result.status)
        self.result = item_result


class QuestionItem(pytest.Item):
    def __init__(self, *, question: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.question = question

    def runtest(self) -> None:
        run = _run_for(self.parent)  # type: ignore[arg-type]
        result = next((i for i in run.items if i.id == self.question.id), None)
        if result is None and self.config.getoption("limit"):
            pytest.skip(f"not evaluated: beyond --limit {self.config.getoption('limit')}")
        if result is None:
            raise Txt2SqlError(f"question {self.question.id} was not evaluated")
        self.user_properties.extend([("status", result.status), ("flags", ",".join(result.flags)),
                                     ("exact_match", str(result.exact_match))])
        if result.status == "gold_error":
            pytest.skip(f"gold_error (benchmark defect, not scored): {result.error}")
        if result.status != "correct":
            raise QuestionFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, QuestionFailure):
            r = excinfo.value.result
            lines = [f"question:   {r.question}", f"status:     {r.status}",
                     f"flags:      {', '.join(r.flags) or '-'}",
                     *(f"  {k}: {v}" for k, v in r.flag_details.items()),
                     f"gold:       {r.gold_sql}", f"predicted:  {r.predicted_sql}",
                     f"raw output: {r.raw_output[:400]!r}"]
            if r.error:
                lines.append(f"error:      {r.error}")
            if r.diff:
                lines.append("first rows that differ:\n" + r.diff)
            return "\n".join(lines)
        if isinstance(excinfo.value, Txt2SqlError):
            return f"txt2sql: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.question.id}: {self.question.question}"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which questions survived -k / deselection: only those are generated."""
    selected: dict[str, set[str]] = {}
    for item in session.items:
        if isinstance(item, QuestionItem):
            selected.setdefault(str(item.parent.path), set()).add(item.question.id)  # type: ignore[union-attr]
    session.config.stash[state_key].results["_selected"] = selected


def _run_for(bench_file: BenchmarkFile) -> Any:
    state = bench_file.config.stash[state_key]
    key = str(bench_file.path)
    if key in state.errors:
        raise Txt2SqlError(state.errors[key])
    if key not in state.results:
        try:
            state.results[key] = _evaluate(bench_file, state.results.get("_selected", {}).get(key))
        except Txt2SqlError as exc:
            state.errors[key] = str(exc)
            raise
    return state.results[key]


def _evaluate(bench_file: BenchmarkFile, ids: set[str] | None) -> Any:
    from harness.options import eval_config, gate_config
    from harness.pipeline import evaluate
    values = vars(bench_file.config.option)
    bench, split = bench_file.spec()
    quiet = bench_file.config.getoption("verbose") < 0 or values.get("no_progress") is not None
    config = eval_config(values, benchmark=bench, split=split, ids=frozenset(ids) if ids else None,
                         progress=not quiet)
    # generation takes minutes: show its progress bar on the terminal, past pytest's output capture
    capman = bench_file.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        result = evaluate(config)
    if values.get("gate") and values.get("baseline"):
        from harness.gate.gate import decide, load_baseline
        from harness.report.records import Run
        candidate = Run(result.out, result.summary, result.items)
        bench_file.config.stash[state_key].gate = decide(load_baseline(values["baseline"]), candidate,
                                                         gate_config(values))
    return result


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(state_key, None)
    if state is None:
        return
    for key, result in state.results.items():
        if key == "_selected":
            continue
        s = result.summary
        terminalreporter.section(f"txt2sql: {Path(key).name}")
        terminalreporter.write_line(
            f"model {s.model}: execution_accuracy {s.execution_accuracy:.3f} "
            f"(superset {s.execution_accuracy_superset:.3f}), exact_match {s.exact_match:.3f}, "
            f"n={s.n_scored}/{s.n}, fixture_intact={s.fixture_intact}")
        terminalreporter.write_line(f"ran: {s.run.describe()}")
        terminalreporter.write_line(f"statuses: {s.status_counts}  flags: {s.flag_counts}")
        terminalreporter.write_line(f"results: {result.out / 'results.jsonl'}")
    if state.gate is not None:
        d = state.gate
        terminalreporter.section("txt2sql gate")
        terminalreporter.write_line(("PASSED" if d.passed else "FAILED") + ": " + "; ".join(d.reasons))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("gate", False) and not session.config.getoption("baseline", None):
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    state = session.config.stash.get(state_key, None)
    if state is not None and state.gate is not None and not state.gate.passed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
