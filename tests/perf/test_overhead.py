"""benchmarks/perf/overhead.py end to end, on the mini benchmark with replayed outputs: one JSON line
whose figures add up (the wall time holds every stage of the caller's thread)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import MINI, REPO


def test_one_json_line_whose_stages_fit_in_the_wall_time(tmp_path):
    preds = tmp_path / "pred.jsonl"
    preds.write_text('{"id": "names", "output": "SELECT name FROM rfgcpy;"}\n', encoding="utf-8")
    clusters = Path(tempfile.mkdtemp(prefix="txt2sql-overhead-test-"))
    os.chmod(clusters, 0o755)  # reachable by the postgres OS user
    argv = [sys.executable, str(REPO / "benchmarks/perf/overhead.py"), "--fresh", "--model", f"replay:{preds}",
            "--benchmark", str(MINI), "--db", "local", "--no-progress"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TXT2SQL_TMPDIR=str(clusters), PYTHONPATH=str(REPO)))
    left = list(clusters.iterdir())
    shutil.rmtree(clusters, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not left  # the run tore its cluster down
    (line,) = proc.stdout.strip().splitlines()
    figures = json.loads(line)
    assert figures["mode"] == "fresh-cache" and figures["questions"] == 6
    assert figures["non_generation_s"] == round(figures["wall_s"] - figures["generation_s"], 2)
    assert 0 < figures["non_generation_share"] <= 1
    stages = figures["stages"]
    in_order = ("startup", "model load", "wait for databases", "generate", "score", "checksums", "summary",
                "report", "console")
    assert set(stages) == {*in_order, "databases", "teardown"}
    assert sum(stages[s] for s in in_order) <= figures["wall_s"] + 0.05  # rounding
