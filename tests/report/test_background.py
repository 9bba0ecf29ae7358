"""report.html rendered by a process of its own (harness/report/background.py): the page it installs is
the page the harness would have rendered, and only for the summary it was sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.report.background import RENDERED, BackgroundReport
from harness.report.html import render_run_html
from harness.report.records import Run
from harness.report.writer import RunWriter


def _written(run: Run, out: Path) -> RunWriter:
    """A run directory as the pipeline leaves it before ``finish``: every record in results.jsonl.partial."""
    out.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(out)
    for item in run.items:
        writer.append(item)
    return writer


def test_the_page_rendered_in_its_process_is_the_page_rendered_here(base_run, tmp_path):
    out = tmp_path / "run"
    writer = _written(base_run, out)
    report = BackgroundReport(out)
    try:
        report.render(base_run.summary)
        writer.finish(base_run.summary, report)
    finally:
        report.close()
    assert (out / "report.html").read_text(encoding="utf-8") == render_run_html(Run(out, base_run.summary, base_run.items))
    assert not (out / RENDERED).exists()


def test_a_page_rendered_for_another_summary_is_not_installed(base_run, tmp_path):
    out = tmp_path / "run"
    writer = _written(base_run, out)
    report = BackgroundReport(out)
    try:
        report.render(base_run.summary)  # says the fixture is intact; the checksums then disagree
        changed = replace(base_run.summary, fixture_intact=False)
        assert report.install(changed) is False
    finally:
        report.close()
    assert not (out / RENDERED).exists() and not (out / "report.html").exists()
    writer.finish(changed)  # rendered here instead
    assert (out / "report.html").read_text(encoding="utf-8") == render_run_html(Run(out, changed, base_run.items))


def test_a_failed_process_leaves_the_page_to_the_harness(base_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    report = BackgroundReport(out)  # no results.jsonl.partial: the process fails to read the records
    try:
        report.render(base_run.summary)
        assert report.install(base_run.summary) is False
    finally:
        report.close()
    assert not (out / RENDERED).exists() and not (out / "report.html").exists()


def test_closed_before_the_summary_the_process_ends_and_leaves_nothing(tmp_path):
    report = BackgroundReport(tmp_path)
    report.close()
    assert list(tmp_path.iterdir()) == []
