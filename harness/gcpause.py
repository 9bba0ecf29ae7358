"""The cyclic garbage collector during one evaluation: paused while the model loads, and the objects
alive after the load left out of its later passes.

Loading a model is mostly importing torch and transformers, which allocates a few million objects that
live as long as the process (modules, classes, functions). The collector runs every few hundred
allocations and, as the heap grows, keeps re-scanning everything already loaded: on the bundled main
job (2 CPU cores) that was 0.5-1 s of a 3-4 s model load, and the first passes after it re-scanned the
load's objects again during scoring (docs/performance.md). So the collector is off during the load
(reference counting still frees everything that is not a cycle), and what is alive once the model is
loaded is frozen (``gc.freeze``) until the evaluation ends, when it goes back to the oldest generation
and is collected as before. Nothing the evaluation computes changes; only when cycles are freed.

>>> import gc
>>> with EvaluationHeap() as heap:
...     with heap.loading():
...         gc.isenabled()
False
>>> gc.isenabled(), gc.get_freeze_count()
(True, 0)
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from types import TracebackType


class EvaluationHeap:
    """``with EvaluationHeap() as heap: with heap.loading(): <load the model>``. Restores the caller's
    collector state on exit: a collector the caller had disabled stays disabled, and a caller that froze
    objects itself (``gc.freeze`` before a fork) keeps them frozen, since then nothing is frozen here."""

    def __init__(self) -> None:
        self._froze = False

    def __enter__(self) -> EvaluationHeap:
        return self

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """The collector off for the block; then what is alive is frozen, unless the caller froze already."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if not self._froze and gc.get_freeze_count() == 0:
                gc.freeze()
                self._froze = True
            if was_enabled:
                gc.enable()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._froze:
            gc.unfreeze()  # into the oldest generation: collected again from here on
            self._froze = False
