"""A replay backend whose generations are counted and slowed: the test-only backend behind the crash,
resume and concurrency tests. Every item it really generates (not a cache hit) is appended, fsynced,
to the file ``$TXT2SQL_TEST_COUNTER``; ``$TXT2SQL_TEST_DELAY`` seconds pass per item, so a test can
kill the run between two items.

Registered as ``counted:PRED.jsonl`` by ``launch_cli`` (the model registry has no plugin hook, so the
launcher adds it to ``registry.BACKENDS`` before calling the real CLI).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from harness.models.base import (
    BackendOptions,
    Generation,
    GenerationConfig,
    ModelBackend,
    ProgressCallback,
    Prompt,
)
from harness.models.replay import ReplayBackend


class CountedBackend(ModelBackend):
    def __init__(self, path: Path, spec: str, counter: Path | None, delay: float) -> None:
        self._replay = ReplayBackend(path, spec=spec)
        self.spec = spec
        self.template = None
        self.warnings: list[str] = []
        self.counter = counter
        self.delay = delay
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return "counted-" + self._replay.fingerprint

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        out = []
        for p in prompts:
            time.sleep(self.delay)
            self.calls += 1
            if self.counter is not None:
                with open(self.counter, "a", encoding="utf-8") as fh:
                    fh.write(f"{os.getpid()}\t{p.id}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            out.extend(self._replay.generate([p], config, progress))
        return out

    def close(self) -> None:
        pass


def load_counted_backend(path: str, options: BackendOptions, *, spec: str | None = None) -> CountedBackend:
    counter = os.environ.get("TXT2SQL_TEST_COUNTER")
    return CountedBackend(Path(path), spec or f"counted:{path}", Path(counter) if counter else None,
                          float(os.environ.get("TXT2SQL_TEST_DELAY", "0")))


def register() -> None:
    from harness.models import registry
    registry.BACKENDS.setdefault("counted", (__name__, "load_counted_backend", "", True))
