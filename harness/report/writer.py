"""Writes a run directory: results.jsonl grows line by line (flushed, fsynced) so nothing finished is
lost; summary.json and report.html are written atomically at the end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report.records import ItemResult, Summary

if TYPE_CHECKING:
    from harness.report.background import BackgroundReport

PARTIAL = "results.jsonl.partial"  # results.jsonl while the run writes it


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunWriter:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.partial = out / PARTIAL
        self._fh = open(self.partial, "w", encoding="utf-8")
        self.items: list[ItemResult] = []

    def append(self, item: ItemResult) -> None:
        self._fh.write(item.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.items.append(item)

    def finish(self, summary: Summary, report: BackgroundReport | None = None) -> None:
        """results.jsonl and summary.json; then report.html, from ``report`` (rendered in its own process)
        when it rendered this summary, else rendered here."""
        self._fh.close()
        os.replace(self.partial, self.out / "results.jsonl")
        atomic_write(self.out / "summary.json", summary.to_json() + "\n")
        if report is not None and report.install(summary):
            return
        try:
            from harness.report.html import render_run_html
            from harness.report.records import Run
            html = render_run_html(Run(self.out, summary, tuple(self.items)))
            atomic_write(self.out / "report.html", html)
        except ImportError:  # the HTML renderer is optional at import time; summary.json is what counts
            pass
