"""The generation cache: hits, resume after an interrupted run, torn lines, errors not cached, locking."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import pytest

from harness.models.base import Generation, GenerationConfig, ModelBackend, Prompt
from harness.models.cache import CachedBackend, cache_key, default_cache_dir

CFG = GenerationConfig(batch_size=2)


class Counting(ModelBackend):
    """A backend that echoes prompts, counts calls, and can die after some batches (like kill -9)."""

    spec = "fake:counting"

    def __init__(self, fingerprint: str = "f" * 64, die_after: int | None = None, fail_ids=()):
        self._fp = fingerprint
        self.generated: list[str] = []
        self.die_after = die_after
        self.fail_ids = set(fail_ids)
        self.template = "kept"

    @property
    def fingerprint(self) -> str:
        return self._fp

    def generate(self, prompts: Sequence[Prompt], config, progress=None):
        if self.die_after is not None and self.die_after <= 0:
            raise KeyboardInterrupt("killed")
        if self.die_after is not None:
            self.die_after -= 1
        self.generated += [p.id for p in prompts]
        return [Generation(p.id, "", finish_reason="error", error="boom") if p.id in self.fail_ids
                else Generation(p.id, f"SELECT '{p.text}';", tokens_in=3, tokens_out=5, seconds=0.5)
                for p in prompts]

    def close(self):
        pass


PROMPTS = [Prompt(str(i), f"question {i}" + "x" * i) for i in range(5)]


def test_second_run_is_served_from_cache(tmp_path):
    first = CachedBackend(Counting(), tmp_path)
    a = first.generate(PROMPTS, CFG)
    assert not any(g.cached for g in a)
    inner = Counting()
    second = CachedBackend(inner, tmp_path)
    done = []
    b = second.generate(PROMPTS, CFG, progress=done.append)
    assert inner.generated == [] and all(g.cached for g in b) and done == [5]
    assert [(g.id, g.text, g.tokens_out, g.seconds) for g in b] == [(g.id, g.text, g.tokens_out, g.seconds) for g in a]
    assert second.template == "kept"  # the wrapped backend's declared attributes show through


def test_key_depends_on_fingerprint_prompt_and_config():
    p = Prompt("1", "x")
    k = cache_key("fp", p, CFG)
    assert k != cache_key("fp2", p, CFG)
    assert k != cache_key("fp", Prompt("1", "y"), CFG)
    assert k != cache_key("fp", p, GenerationConfig(max_new_tokens=7))
    assert k == cache_key("fp", Prompt("other-id", "x"), CFG)  # same input, same output
    assert k != cache_key("fp", Prompt("1", "x", messages=(("user", "x"),)), CFG)


def test_interrupted_run_resumes_without_regenerating(tmp_path):
    killed = CachedBackend(Counting(die_after=1), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        killed.generate(PROMPTS, CFG)
    first_batch = killed.inner.generated
    assert len(first_batch) == 2
    inner = Counting()
    gens = CachedBackend(inner, tmp_path).generate(PROMPTS, CFG)
    assert sorted(inner.generated) == sorted(set(p.id for p in PROMPTS) - set(first_batch))
    assert [g.cached for g in gens] == [g.id in first_batch for g in gens]


def test_torn_last_line_is_ignored_and_not_glued_to_the_next(tmp_path):
    c = CachedBackend(Counting(), tmp_path)
    c.generate(PROMPTS[:2], CFG)
    with open(c.path, "a") as f:
        f.write('{"key": "abc", "fp": "fff')  # killed mid-write
    inner = Counting()
    again = CachedBackend(inner, tmp_path)
    assert len(again.read()) == 2
    again.generate(PROMPTS, CFG)
    assert sorted(inner.generated) == ["2", "3", "4"]
    lines = c.path.read_text().splitlines()
    assert len(lines) == 6 and sum(1 for ln in lines if ln.startswith('{"key": "abc", "fp": "fff')) == 1
    assert len(CachedBackend(Counting(), tmp_path).read()) == 5


def test_errors_are_not_cached(tmp_path):
    CachedBackend(Counting(fail_ids={"3"}), tmp_path).generate(PROMPTS, CFG)
    inner = Counting()
    gens = CachedBackend(inner, tmp_path).generate(PROMPTS, CFG)
    assert inner.generated == ["3"] and gens[3].error is None


def test_other_fingerprints_do_not_share_entries(tmp_path):
    CachedBackend(Counting("a" * 64), tmp_path).generate(PROMPTS, CFG)
    inner = Counting("b" * 64)
    CachedBackend(inner, tmp_path).generate(PROMPTS, CFG)
    assert len(inner.generated) == 5


def test_concurrent_writers_do_not_interleave(tmp_path):
    prompts = [Prompt(str(i), "p" * 2000 + str(i)) for i in range(200)]

    def run(offset: int) -> None:
        CachedBackend(Counting(), tmp_path).generate(prompts[offset::4], GenerationConfig(batch_size=5))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = CachedBackend(Counting(), tmp_path).path
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 200


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TXT2SQL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "generations"


def test_the_wrapper_declares_what_it_forwards(tmp_path):
    inner = Counting()
    inner.warnings = ["a template mismatch"]
    cached = CachedBackend(inner, tmp_path)
    assert cached.describe() == inner.describe() and cached.describe().backend == "fake"
    inner.warnings.append("said while generating")
    assert list(cached.warnings) == ["a template mismatch", "said while generating"]
    with pytest.raises(AttributeError):
        cached.generated  # noqa: B018 - nothing is forwarded dynamically any more
