"""CUDA graphs of the engine's decoding step: the step's ~1,500 kernel launches replayed as one.

Why: on an H200 a 13B decoding step through transformers' eager forward is bound by the host. Profiled
(`benchmarks/perf/generation.py --profile`, 56 rows): 310 thousand kernel launches and 4.8 s of device work
in 8.5 s of wall time. A graph is recorded once per shape and replayed with one launch.

A graph is keyed by what fixes its shapes and addresses: the slot count and the attention window (a multiple
of ``harness.models.engine.WINDOW_BLOCK`` columns). The step reads its inputs (the last tokens, the positions)
from the engine's own state tensors and writes keys and values into the slot cache's buffers, all at fixed
addresses while a pass runs; whatever replaces them (compaction, an out-of-memory restart) comes with a
new ``DecodeGraphs``. Graphs share one memory pool: they are replayed one at a time and each replay's logits
are consumed before the next.

Recording runs the step once eagerly first (on a side stream, as torch requires), so the first step of a new
shape costs two forwards; the eager run writes the same keys and values at the same columns as the replay
that follows, so it changes nothing. A step that cannot be recorded (a quantised layer that synchronises
with the host, say) is reported once and the engine decodes eagerly from then on: the same results, only
slower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class GraphCaptureFailed(Exception):
    """The step could not be recorded; the engine goes on without graphs."""


class DecodeGraphs:
    """One recorded decoding step per (slots, window); ``run`` replays it, recording it first if new."""

    def __init__(self, on_capture: Callable[[tuple[int, int], float, float], None] = lambda *a: None) -> None:
        """``on_capture(key, warm_up_seconds, record_seconds)`` is called after each recording (the engine counts
        them, and their time, across passes)."""
        self.graphs: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.pool: Any = None
        self.on_capture = on_capture

    def run(self, key: tuple[int, int], step: Callable[[], Any]) -> Any:
        """The logits of ``step()`` for this key: the recorded graph replayed (the output tensor is the
        graph's own, valid until the next replay)."""
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(key, step)
        graph, out = entry
        graph.replay()
        return out

    def _capture(self, key: tuple[int, int], step: Callable[[], Any]) -> tuple[Any, Any]:
        import time

        import torch

        from harness.models.engine import is_oom

        torch.cuda.current_stream().synchronize()  # the steps already queued are not this recording's time
        t0 = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                step()  # the warm-up torch asks for: allocator and library workspaces settle outside the graph
            side.synchronize()
            t1 = time.perf_counter()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = step()
        except Exception as exc:
            if is_oom(exc):
                raise
            raise GraphCaptureFailed(f"{type(exc).__name__}: {exc}") from exc
        self.pool = graph.pool()
        torch.cuda.current_stream().synchronize()  # once per recording: its time is then all counted
        self.on_capture(key, t1 - t0, time.perf_counter() - t1)
        return graph, out
