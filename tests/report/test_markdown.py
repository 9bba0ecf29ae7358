from __future__ import annotations

import doctest

import pytest

import harness.report.markdown as markdown_module
from harness.gate import GateConfig, decide
from harness.report.markdown import render_compare_markdown
from harness.report.records import Run


def table_rows(md: str, header_start: str) -> list[list[str]]:
    """The body rows of the first table whose header starts with ``| header_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return [[c.strip() for c in split_row(r)] for r in rows]


def split_row(line: str) -> list[str]:
    cells, cur, i = [], "", 1
    while i < len(line) - 1:
        if line[i] == "\\" and i + 1 < len(line):
            cur += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(cur)
            cur = ""
        else:
            cur += line[i]
        i += 1
    cells.append(cur)
    return cells


def test_docstring_examples_run() -> None:
    result = doctest.testmod(markdown_module)
    assert result.attempted >= 1 and result.failed == 0


def test_compare_markdown_tables(base_run: Run, tuned_run: Run) -> None:
    d = decide(base_run, tuned_run)
    md = render_compare_markdown([base_run, tuned_run], d)
    runs = table_rows(md, "run | benchmark")
    assert [r[0] for r in runs] == [base_run.label, tuned_run.label]
    assert runs[0][3] == f"{base_run.summary.execution_accuracy:.1%}"
    assert ("✅ PASS" if d.passed else "❌ FAIL") in md
    tags = table_rows(md, "tag |")
    assert [r[0] for r in tags] == sorted(base_run.summary.by_tag)
    statuses = {r[0]: r[1:] for r in table_rows(md, "status |")}
    assert statuses["correct"] == [str(base_run.summary.status_counts["correct"]),
                                   str(tuned_run.summary.status_counts["correct"])]
    dist = table_rows(md, "run | measure")
    assert {r[1] for r in dist} == {"tokens out", "generate s", "execute s"}
    flips = table_rows(md, "change |")
    assert len(flips) == len(d.flips)
    assert [r[1] for r in flips] == [f.id for f in d.flips]
    assert all(len(r) == 7 for r in flips), "a pipe inside a cell broke the table"
    hostile = next(r for r in flips if r[1] == "61")
    assert hostile[3] == "&lt;script&gt;alert('x')&lt;/script&gt; 西湖区 \\| 有多少 &amp; 个公园？"
    assert "SELECT '<b>' \\|\\| name FROM poi WHERE a < 3 AND b > 2;" in hostile[6]  # code span: raw


def test_pipes_and_newlines_cannot_break_a_table(base_run: Run, tuned_run: Run) -> None:
    md = render_compare_markdown([tuned_run, base_run])  # 61 stays wrong; flips computed without a decision
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.endswith("|")
    assert "\n\n\n" not in md


def test_summary_only_run_and_gate_note(base_run: Run, tuned_run: Run) -> None:
    summary_only = Run(base_run.path, base_run.summary, ())
    d = decide(summary_only, tuned_run, GateConfig(max_accuracy_drop=0.5))
    md = render_compare_markdown([summary_only, tuned_run], d)
    assert "Paired test not run" in md
    assert "Not available: per-question results are missing" in md


def test_needs_a_run() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        render_compare_markdown([])
