"""report.html rendered by a process of its own while the harness finishes the run.

The HTML report is pure Python work: importing its renderer (matplotlib, jinja2) takes about 0.3 s and
rendering the main job's page about 0.3 s more, all under the harness's interpreter lock. A process
started when the scoring begins opens ``results.jsonl.partial`` and imports the renderer on the other
core while the scoring runs; once the summary is known it reads the records (every one is written and
fsynced by then) and renders the page while the harness checksums the fixture.

It renders the summary it is sent, which says the fixture is intact (the checksums are not known yet).
``install`` moves its page into place only for that very summary: when the checksums find the fixture
changed, the summary differs, the page is discarded and the harness renders it itself (as it does when
the process could not be started or failed). The page is the one the harness would have rendered: the
same records and summary, read back as ``txt2sql report`` reads them.

``python -m harness.report.background RUN_DIR`` reads the summary (JSON) on stdin and writes
``RUN_DIR/.report.html.rendered``; an empty stdin (the run stopped before its summary) writes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from harness.report.records import Summary

log = logging.getLogger(__name__)
RENDERED = ".report.html.rendered"
NICENESS = 10  # the process imports while the scoring runs: it takes the CPU the scoring leaves


class BackgroundReport:
    """``report = BackgroundReport(out)`` when the scoring starts, ``report.render(summary)`` once every
    record is written, ``report.install(summary)`` to put the page in place, ``report.close()`` always."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._sent: Summary | None = None
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", __name__, str(out)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        except OSError as exc:  # the harness renders the page itself
            log.info("the report is rendered in this process: %s", exc)
            self._proc = None

    def render(self, summary: Summary) -> None:
        """Start rendering the page of ``summary`` from the records written so far (all of them, by now)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(summary.to_json().encode("utf-8"))
            proc.stdin.close()
            self._sent = summary
        except OSError:  # the process died (an import failed): the harness renders the page itself
            self.close()

    def install(self, summary: Summary) -> bool:
        """Wait for the page and move it to report.html, if it was rendered for ``summary``. False: it was
        not (another summary, or the process failed); the caller renders the page."""
        proc = self._proc
        if proc is None or self._sent is None or self._sent != summary:
            self.close()
            return False
        err = _finish(proc)
        self._proc = None
        rendered = self.out / RENDERED
        if proc.returncode != 0 or not rendered.is_file():
            log.info("the report's process failed (exit %s); rendering it here:\n%s", proc.returncode,
                     err.decode("utf-8", "replace")[-2000:])
            self.close()
            return False
        os.replace(rendered, self.out / "report.html")
        return True

    def close(self) -> None:
        """Stop the process if it still runs, and remove a page that was not installed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            _finish(proc)
        (self.out / RENDERED).unlink(missing_ok=True)


def _finish(proc: subprocess.Popen[bytes]) -> bytes:
    """Wait for the process; what it wrote to stderr. (``communicate`` refuses a stdin already closed.)"""
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    err = proc.stderr.read() if proc.stderr is not None else b""
    if proc.stderr is not None:
        proc.stderr.close()
    proc.wait()
    return err


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    try:  # behind the PostgreSQL backends that serve the scoring's queries on the same core
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    from harness.report.writer import PARTIAL, atomic_write

    # Opened now: the harness renames it to results.jsonl once the checksums are done, which may be before
    # this process reads it; the open file is the same file under either name.
    try:
        records = open(out / PARTIAL, encoding="utf-8")
    except FileNotFoundError:
        records = open(out / "results.jsonl", encoding="utf-8")
    with records:
        # imported while the harness is still scoring: that is what this process is for
        from harness.report.html import render_run_html
        from harness.report.records import ItemResult, Run

        data = sys.stdin.buffer.read()
        if not data:
            return 0
        summary = Summary.from_dict(json.loads(data))
        items = tuple(ItemResult.from_dict(json.loads(line)) for line in records if line.strip())
    atomic_write(out / RENDERED, render_run_html(Run(out, summary, items)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
