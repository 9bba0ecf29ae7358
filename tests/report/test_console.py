from __future__ import annotations

import doctest

import pytest
from rich.console import Console

import harness.report.console as console_module
from harness.gate import GateConfig, decide
from harness.report.console import print_flips, print_gate, print_summary
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
    assert f"{d.mcnemar_b} broken (correct → wrong), {d.mcnemar_c} fixed (wrong → correct)" in out
    assert "→ fixed" not in out and "→ broken" not in out  # one vocabulary: a flip is fixed or broken
    rows = [line for line in out.splitlines() if line.startswith("│ fixed ") or line.startswith("│ broken ")]
    assert len(rows) == len(d.flips)
    for flip, row in zip(d.flips, rows, strict=True):
        assert row.split("│")[1].strip() == ("fixed" if flip.candidate_status == "correct" else "broken")
    assert "杭州市第" in out


@pytest.mark.parametrize("width", [80, 100])
def test_flips_fit_the_terminal(base_run: Run, tuned_run: Run, width: int) -> None:
    from rich.cells import cell_len

    d = decide(base_run, tuned_run)
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    print_flips(d, console)
    lines = console.export_text().splitlines()
    assert lines and max(cell_len(line.rstrip()) for line in lines) <= width
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == len(d.flips)
    for flip, line in zip(d.flips, body, strict=True):  # change, id and statuses are whole; only the question shortens
        cells = [c.strip() for c in line.split("│")[1:-1]]
        assert cells[:4] == [flip.change, flip.id, flip.baseline_status, flip.candidate_status]
        assert line.rstrip().endswith("│")


def test_print_gate_without_paired_results(base_run: Run, tuned_run: Run) -> None:
    d = decide(Run(base_run.path, base_run.summary, ()), tuned_run, GateConfig(max_accuracy_drop=0.5))
    console = capture()
    print_gate(d, console)
    out = console.export_text()
    assert "gate: PASS" in out
    assert "paired test: not run" in out
    assert "note: no per-question results for baseline" in out
