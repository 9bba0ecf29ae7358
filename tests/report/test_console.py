from __future__ import annotations

import doctest

from rich.console import Console

import harness.report.console as console_module
from harness.gate import GateConfig, decide
from harness.report.console import print_gate, print_summary
from harness.report.records import Run


def capture() -> Console:
    return Console(record=True, width=160, color_system=None, force_terminal=False)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(console_module)
    assert result.attempted >= 1 and result.failed == 0


def test_print_summary_shows_metrics_statuses_flags_and_tags(base_run: Run) -> None:
    console = capture()
    print_summary(base_run.summary, console)
    out = console.export_text()
    s = base_run.summary
    assert f"{s.execution_accuracy:.1%}" in out
    assert f"{s.n} ({s.n_scored} scored)" in out
    for status in s.status_counts:
        assert status in out
    assert "unknown_column" in out and "truncated" in out
    for tag, score in s.by_tag.items():
        assert tag in out and f"{score.execution_accuracy:.1%}" in out


def test_print_gate_shows_verdict_numbers_and_flips(base_run: Run, tuned_run: Run) -> None:
    d = decide(base_run, tuned_run)
    console = capture()
    print_gate(d, console)
    out = console.export_text()
    assert out.splitlines()[0].startswith("gate: FAIL" if not d.passed else "gate: PASS")
    assert f"McNemar exact p = {d.mcnemar_p:.3g}" in out
    assert f"{d.mcnemar_b} broken" in out and f"{d.mcnemar_c} fixed" in out
    assert "fixed → broken" in out and "broken → fixed" in out
    for flip in d.flips:
        assert f" {flip.id} " in out
    assert "杭州市第" in out


def test_print_gate_without_paired_results(base_run: Run, tuned_run: Run) -> None:
    d = decide(Run(base_run.path, base_run.summary, ()), tuned_run, GateConfig(max_accuracy_drop=0.5))
    console = capture()
    print_gate(d, console)
    out = console.export_text()
    assert "gate: PASS" in out
    assert "paired test: not run" in out
    assert "note: no per-question results for baseline" in out
