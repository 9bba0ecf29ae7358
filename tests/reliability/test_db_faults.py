"""The PostgreSQL server killed mid-run: the harness restarts it and retries, and the verdicts equal a
clean run's; if it cannot restart it, the run stops with an InfrastructureError (CLI exit 2), never
with a model failure.

The kill is deterministic: ``Scorer.execute`` is wrapped so that the postmaster of the run's local
cluster gets SIGKILL right before chosen queries (counted from the start of scoring).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from harness import cli
from harness.errors import InfrastructureError
from harness.pipeline import EvalConfig, Scorer, evaluate
from tests.conftest import MINI
from tests.reliability.conftest import COMPARED, EXPECTED, server_pids


def _postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().splitlines()[0])


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (the postmaster is not our child, so this is rare) counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def kill_postmaster(server) -> int:
    pid = _postmaster_pid(server.datadir)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


def inject(monkeypatch, at: set[int], then=None) -> list[int]:
    """SIGKILL the postmaster before the ``at``-th queries; returns the killed pids."""
    original = Scorer.execute
    calls = {"n": 0}
    killed: list[int] = []

    def execute(self, vdb, sql, **kwargs):
        calls["n"] += 1
        if calls["n"] in at:
            killed.append(kill_postmaster(self.server))
            if then is not None:
                then(self.server)
        return original(self, vdb, sql, **kwargs)

    monkeypatch.setattr(Scorer, "execute", execute)
    return killed


def _config(tmp_path: Path, predictions: Path, name: str) -> EvalConfig:
    return EvalConfig(benchmark=MINI, model=f"replay:{predictions}", db="local", out=tmp_path / name,
                      use_cache=False, progress=False, statement_timeout_ms=2000)


def _verdicts(result) -> dict[str, tuple[object, ...]]:
    return {i.id: tuple(getattr(i, k) for k in COMPARED) for i in result.items}


@pytest.fixture()
def local_tmp(pg_tmp, monkeypatch) -> Path:
    monkeypatch.setenv("TXT2SQL_TMPDIR", str(pg_tmp))
    return pg_tmp


def test_server_killed_mid_run_is_restarted_and_verdicts_equal_a_clean_run(tmp_path, local_tmp, predictions,
                                                                          monkeypatch):
    clean = evaluate(_config(tmp_path, predictions, "clean"))
    assert {i.id: i.status for i in clean.items} == EXPECTED
    # query 1: the very first gold; 7: mid-run, between items; 12: a prediction on the second variant
    killed = inject(monkeypatch, {1, 7, 12})
    faulty = evaluate(_config(tmp_path, predictions, "faulty"))
    assert len(killed) == 3 and len(set(killed)) == 3, "each fault must hit a fresh (restarted) postmaster"
    assert _verdicts(faulty) == _verdicts(clean)
    assert not any("connection" in (i.error or "") for i in faulty.items)
    assert faulty.summary.fixture_intact is True
    assert faulty.summary.status_counts == clean.summary.status_counts
    assert _no_server_left(local_tmp)


def _no_server_left(under: Path, timeout: float = 10) -> bool:
    """Orphaned backends of a SIGKILLed postmaster exit on their own once they notice it is gone."""
    deadline = time.monotonic() + timeout
    while server_pids(under) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not server_pids(under)


def _break_data_dir(server) -> None:
    """After the kill: the cluster's control file is gone, so no restart can succeed."""
    (server.datadir / "global" / "pg_control").unlink()


def test_server_that_cannot_restart_raises_infrastructure_error(tmp_path, local_tmp, predictions, monkeypatch):
    inject(monkeypatch, {3}, then=_break_data_dir)
    with pytest.raises(InfrastructureError, match="could not be restarted") as info:
        evaluate(_config(tmp_path, predictions, "broken"))
    assert "re-run the same command to resume" in str(info.value)
    # nothing was recorded as a model failure: the run stopped before any verdict was final
    assert not (tmp_path / "broken" / "results.jsonl").exists()
    partial = tmp_path / "broken" / "results.jsonl.partial"
    assert not partial.exists() or partial.read_text(encoding="utf-8") == ""
    assert _no_server_left(local_tmp), f"server processes left behind: {server_pids(local_tmp)}"


def test_cli_exits_2_when_the_server_cannot_be_restarted(tmp_path, local_tmp, predictions, monkeypatch, capsys):
    inject(monkeypatch, {3}, then=lambda server: shutil.rmtree(server.datadir))
    code = cli.main(["eval", "--benchmark", str(MINI), "--db", "local", "--model", f"replay:{predictions}",
                     "--out", str(tmp_path / "cli"), "--no-cache", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "txt2sql: error:" in err and "could not be restarted" in err
    assert _no_server_left(local_tmp), f"server processes left behind: {server_pids(local_tmp)}"
