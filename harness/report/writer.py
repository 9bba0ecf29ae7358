"""Writes a run directory: results.jsonl grows line by line (flushed, fsynced) so nothing finished is
lost; summary.json and report.html are written atomically at the end."""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path

from harness.report.records import ItemResult, Summary


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
        self.partial = out / "results.jsonl.partial"
        self._fh = open(self.partial, "w", encoding="utf-8")
        self.items: list[ItemResult] = []

    def append(self, item: ItemResult) -> None:
        self._fh.write(item.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.items.append(item)

    def finish(self, summary: Summary) -> None:
        self._fh.close()
        os.replace(self.partial, self.out / "results.jsonl")
        atomic_write(self.out / "summary.json", summary.to_json() + "\n")
        try:
            from harness.report.html import render_run_html
            from harness.report.records import Run
            html = render_run_html(Run(self.out, summary, tuple(self.items)))
            atomic_write(self.out / "report.html", html)
        except ImportError:  # the HTML renderer is optional at import time; summary.json is what counts
            pass


RENDERER = "harness.report.html"


def preload_renderer() -> threading.Thread:
    """Start importing the HTML renderer (matplotlib, jinja2: about 0.4 s of a 2-core machine) in a thread
    and return it. The pipeline starts it before the fixture checksums, whose queries wait on the server
    with the interpreter idle, so the import runs in that wait instead of after it; join the thread before
    ``finish``. A failed import is left to ``finish``, which imports again and handles the error there."""

    def load() -> None:
        try:
            importlib.import_module(RENDERER)
        except Exception:  # finish() imports again in the caller's thread and sees it there
            pass

    thread = threading.Thread(target=load, name="txt2sql-renderer-import", daemon=True)
    thread.start()
    return thread
