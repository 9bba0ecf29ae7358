"""benchmarks/perf/generation.py --smoke end to end on the CPU, in a process where sqlglot and psycopg
cannot be imported (the GPU machine has neither)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("sqlglot", "psycopg", "psycopg_pool", "testcontainers")
RUNNER = f"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("the GPU machine has no " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT / "benchmarks/perf")!r})  # as `python benchmarks/perf/generation.py` has it
sys.argv = ["generation.py", "--smoke", "--out", sys.argv[1]]
runpy.run_path({str(ROOT / "benchmarks/perf/generation.py")!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_smoke_run_measures_both_paths_without_sqlglot_or_psycopg(tmp_path):
    out = tmp_path / "gen.jsonl"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    settings = [r for r in rows if "path" in r]
    assert not [r for r in settings if "error" in r], settings
    assert {(r["path"], r["batch_asked"]) for r in settings} == {("harness", "auto"), ("generate", "auto"),
                                                                ("harness", "3"), ("generate", "3")}
    for r in settings:
        assert r["useful_tok_s"] > 0 and r["floor_tok_s"] > 0 and r["x_off_floor"] > 0
        assert r["steps"] >= max(1, r["useful_tokens"] // max(1, r["batch"]))
    harness = [r for r in settings if r["path"] == "harness"]
    assert all(r["rows_stopped_as_forced"] == "8/8" for r in harness)  # the forced stops, not loops
    assert {r["batch"] for r in harness} == {8, 3}  # auto on a CPU: the default 8 (8 items)
    by_batch = {(r["path"], r["batch"]): r["steps"] for r in settings}
    assert by_batch[("harness", 3)] < by_batch[("generate", 3)]  # no waiting for the longest row
    assert rows[0]["copy_gb_s"] > 0
