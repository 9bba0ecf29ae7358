"""The run writer's renderer preload: the HTML renderer imported in a thread, its failure left to finish()."""

from __future__ import annotations

import sys
import threading

import harness.report.writer as writer


def test_preload_imports_the_renderer_in_a_thread_of_its_own(monkeypatch):
    monkeypatch.delitem(sys.modules, writer.RENDERER, raising=False)  # so that only the thread can import it
    thread = writer.preload_renderer()
    assert thread is not threading.current_thread() and thread.name == "txt2sql-renderer-import"
    thread.join(timeout=60)
    assert not thread.is_alive() and writer.RENDERER in sys.modules


def test_a_renderer_that_cannot_be_imported_is_left_to_finish(monkeypatch):
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    monkeypatch.setattr(writer, "RENDERER", "harness.report.no_such_renderer")
    thread = writer.preload_renderer()
    thread.join(timeout=60)
    assert errors == [] and "harness.report.no_such_renderer" not in sys.modules
