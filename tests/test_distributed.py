"""Sharded evaluation (harness/distributed.py, ``python -m harness``) on the CPU with gloo: 2 ranks give
the results of 1 process question by question; a failing or killed rank fails the job with its name."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.distributed import DistributedError, Group, from_env, shards
from harness.models.base import GenerationConfig, ModelBackend, Prompt

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "data" / "mini"


def test_shards_are_balanced_by_length_and_cover_every_item():
    lengths = [500, 20, 480, 30, 25, 470, 40, 35, 300, 310]
    parts = shards(lengths, 3)
    assert sorted(i for p in parts for i in p) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(lengths)
    assert [0, 2, 5] != sorted(parts[0])  # the long prompts are spread, not dealt to one rank
    assert len({frozenset(p) & {0, 2, 5} for p in parts}) == 3


def test_from_env():
    assert from_env({}) is None
    assert from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == Group(2, 4, 0)
    with pytest.raises(DistributedError, match="outside WORLD_SIZE"):
        from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(DistributedError, match="whole numbers"):
        from_env({"WORLD_SIZE": "two"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failing(ModelBackend):
    spec = "failing"
    fingerprint = "failing"

    def generate(self, prompts, config, progress=None):
        raise MemoryError("CUDA out of memory (simulated)")


def test_a_failing_rank_raises_everywhere_with_its_error(monkeypatch):
    """One-rank gloo group: the rank's own failure comes back as DistributedError naming it."""
    pytest.importorskip("torch")
    import torch.distributed as dist

    from harness import distributed

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        with pytest.raises(DistributedError, match="rank 0 failed: MemoryError: CUDA out of memory"):
            distributed.generate_sharded(Failing(), [Prompt("a", "x")], GenerationConfig(), None, Group(0, 1, 0))
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------- end to end

def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    out.pop("WORLD_SIZE", None)
    return out


def eval_args(model_dir: Path, out: Path) -> list[str]:
    return ["eval", "--model", f"hf:{model_dir}", "--benchmark", str(MINI), "--db", "local", "--no-cache",
            "--no-progress", "--dtype", "fp32", "--max-new-tokens", "12", "--out", str(out)]


def records(run: Path) -> dict[str, tuple]:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: (r["raw_output"], r["status"], r["finish_reason"], r["tokens_out"]) for r in rows}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.models.tiny_llama import save_tiny

    return save_tiny(tmp_path_factory.mktemp("dist-llama"), hidden=32)  # random weights


@pytest.fixture(scope="module")
def single(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", *eval_args(model_dir, out)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600)
    if "no local PostgreSQL" in proc.stderr or "initdb" in proc.stderr and proc.returncode:
        pytest.skip(f"no local PostgreSQL + PostGIS: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return records(out)


def test_two_gloo_ranks_equal_one_process_question_by_question(model_dir, single, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "harness", *eval_args(model_dir, out)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1/2 joined" in proc.stderr
    assert records(out) == single
    assert len(single) == 6
    assert not (tmp_path / "run-rank1").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_killed_rank_fails_the_job_with_a_clear_message(model_dir, tmp_path):
    port = str(free_port())
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "TXT2SQL_DIST_TIMEOUT": "120"}
    procs = [subprocess.Popen([sys.executable, "-m", "harness", *eval_args(model_dir, tmp_path / "run")], cwd=ROOT,
                              env={**env(), **common, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 300
        line = ""
        while "joined" not in line and time.monotonic() < deadline:
            line = procs[1].stderr.readline()  # type: ignore[union-attr]
        assert "rank 1/2 joined" in line
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=300)
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 2, err[-3000:]
    assert "lost the other ranks" in err and "a rank died" in err
    assert not (tmp_path / "run" / "summary.json").exists()  # no run that silently misses items


def test_the_pytest_plugin_refuses_to_run_under_a_launcher(pytester, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    pytester.makefile(".txt2sql.json", hangzhou="{}")
    result = pytester.runpytest()
    assert result.ret != 0
    assert "runs as one process, not under torchrun" in result.stdout.str() + result.stderr.str()
