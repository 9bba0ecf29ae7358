"""A generation cache around any backend: re-scoring never regenerates, an interrupted run resumes.

Key = sha256(backend fingerprint, everything the model sees, generation config). Finished items are
appended to ``<cache_dir>/<fingerprint[:16]>.jsonl`` as each batch ends (flushed and fsynced, under an
exclusive ``flock`` so concurrent runs don't interleave lines), so ``kill -9`` loses at most the batch
in flight. A torn last line is skipped on read. Per-item errors are never cached: they are retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harness.models.base import Generation, ModelBackend

if TYPE_CHECKING:
    from harness.models.base import GenerationConfig, ModelInfo, ProgressCallback, Prompt

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, one run at a time
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_STORED = ("text", "finish_reason", "tokens_in", "tokens_out", "seconds", "cost_cny")


def default_cache_dir() -> Path:
    """``$TXT2SQL_CACHE/generations`` or ``~/.cache/txt2sql/generations``."""
    base = os.environ.get("TXT2SQL_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "txt2sql") / "generations"


def cache_key(fingerprint: str, prompt: Prompt, config: GenerationConfig) -> str:
    return hashlib.sha256(json.dumps([fingerprint, prompt.identity(), config.key()],
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


@contextmanager
def _locked(f: IO[Any]) -> Iterator[None]:
    if fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


AUTO_CHUNK = 8  # --batch-size auto, for a backend without generate_iter: the old default batch


class CachedBackend(ModelBackend):
    """Wraps a backend; same interface. Cached generations come back with ``cached=True``."""

    def __init__(self, inner: ModelBackend, cache_dir: Path | str | None = None):
        self.inner = inner
        self.spec = inner.spec
        self.template = inner.template
        self.warnings = inner.warnings  # the same list: warnings added while generating show through
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = self.cache_dir / f"{inner.fingerprint[:16]}.jsonl"

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def describe(self) -> ModelInfo:
        return self.inner.describe()

    def read(self) -> dict[str, dict[str, Any]]:
        """key -> stored fields; unreadable lines (a torn last line after a kill) are skipped."""
        entries: dict[str, dict[str, Any]] = {}
        try:
            raw = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return entries
        fp = self.inner.fingerprint
        for n, line in enumerate(raw.splitlines(), start=1):
            try:
                obj = json.loads(line)
            except ValueError:
                log.info("%s:%d: skipping an unreadable cache line (torn write?)", self.path, n)
                continue
            if isinstance(obj, dict) and obj.get("fp") == fp and isinstance(obj.get("key"), str):
                entries[obj["key"]] = obj
        return entries

    def _append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        with open(self.path, "ab") as f, _locked(f):
            size = f.seek(0, os.SEEK_END)
            if size:
                with open(self.path, "rb") as r:  # a torn last line must not swallow our first one
                    r.seek(size - 1)
                    if r.read(1) != b"\n":
                        data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        fp = self.inner.fingerprint
        stored = self.read()
        keys = [cache_key(fp, p, config) for p in prompts]
        out: list[Generation | None] = [None] * len(prompts)
        todo: list[int] = []
        for i, (p, k) in enumerate(zip(prompts, keys, strict=True)):
            hit = stored.get(k)
            if hit is None:
                todo.append(i)
                continue
            out[i] = Generation(id=p.id, cached=True, **{f: hit[f] for f in _STORED if f in hit})
        if progress is not None and len(todo) < len(prompts):
            progress(len(prompts) - len(todo))
        todo.sort(key=lambda i: -len(prompts[i].identity()))
        for chunk, gens in self._generated(todo, prompts, config, progress):
            rows = []
            for i, g in zip(chunk, gens, strict=True):
                out[i] = g
                if g.error is None:
                    row = {"key": keys[i], "fp": fp, "id": g.id}
                    row.update({f: v for f, v in asdict(g).items() if f in _STORED})
                    rows.append(row)
            self._append(rows)
        return [g for g in out if g is not None]

    def _generated(self, todo: list[int], prompts: Sequence[Prompt], config: GenerationConfig,
                   progress: ProgressCallback | None) -> Iterator[tuple[list[int], list[Generation]]]:
        """(prompt indices, their generations), longest first, each group persisted as it comes. A backend
        that yields generations as they finish (hf, lora: ``generate_iter``) gets every prompt in one call,
        so its batch never waits for a chunk's longest row; others run in chunks of one batch."""
        stream = getattr(self.inner, "generate_iter", None)
        if stream is not None:
            for j, g in stream([prompts[i] for i in todo], config, progress):
                yield [todo[j]], [g]
            return
        size = config.batch_size or AUTO_CHUNK
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            yield chunk, self.inner.generate([prompts[i] for i in chunk], config, progress)

    def close(self) -> None:
        self.inner.close()
