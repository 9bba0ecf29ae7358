"""``kill -9`` of ``txt2sql eval`` mid-run, then the same command again: the second run generates only
what the first had not finished, its results equal an uninterrupted run's, and the killed run's
PostgreSQL server is gone (the watchdog).

The CLI runs in a subprocess with the test-only ``counted:`` backend (a replay backend that records
every item it really generates and waits ``TXT2SQL_TEST_DELAY`` s per item), so "not regenerated" is
counted, not inferred.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.reliability.conftest import (
    EXPECTED,
    PREDICTIONS,
    cli_argv,
    cli_env,
    generated,
    run_cli,
    server_pids,
    verdicts,
)

IDS = {p["id"] for p in PREDICTIONS}


def _cache_lines(cache: Path) -> list[dict[str, object]]:
    rows = []
    for f in (cache / "generations").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass  # a torn last line: the cache skips it too
    return rows


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_kill_9_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path, pg_tmp, predictions):
    model = f"counted:{predictions}"
    # the reference: an uninterrupted run
    ref_env = cli_env(cache=tmp_path / "ref-cache", counter=tmp_path / "ref-count", tmpdir=pg_tmp / "ref")
    ref = run_cli(cli_argv(model, tmp_path / "ref-out"), ref_env)
    assert ref.returncode == 0, ref.stderr
    reference = verdicts(tmp_path / "ref-out" / "results.jsonl")
    assert {k: v[0] for k, v in reference.items()} == EXPECTED

    # the same command, killed with SIGKILL once some (not all) generations are cached
    cache, counter, pgtmp, out = tmp_path / "cache", tmp_path / "count", pg_tmp / "run", tmp_path / "out"
    env = cli_env(cache=cache, counter=counter, tmpdir=pgtmp, delay=0.4)
    argv = cli_argv(model, out)
    proc = subprocess.Popen(argv, env=env, cwd=ref_env["PYTHONPATH"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: len(_cache_lines(cache)) >= 2 or proc.poll() is not None, 60, "2 cached generations")
        assert proc.poll() is None, "the run finished before it could be killed"
        clusters = list(pgtmp.glob("txt2sql-pg-*"))
        assert len(clusters) == 1 and server_pids(clusters[0]), "the killed run had no running cluster"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {str(r["id"]) for r in _cache_lines(cache)}
    first = [i for _, i in generated(counter)]
    assert 2 <= len(finished) < len(IDS), finished
    assert not (out / "results.jsonl").exists()  # the killed run never completed

    # the watchdog tears the killed run's server down and deletes its directory
    _wait(lambda: not server_pids(pgtmp) and not clusters[0].exists(), 20,
          f"the killed run's cluster {clusters[0]} to be stopped and removed")

    # the same command again
    again = run_cli(argv, env)
    assert again.returncode == 0, again.stderr
    second = [i for pid, i in generated(counter)[len(first):]]
    assert set(second) == IDS - finished, "the second run regenerated finished items or missed some"
    assert len(second) == len(set(second))
    assert verdicts(out / "results.jsonl") == reference
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["fixture_intact"] is True
    assert not server_pids(pgtmp)  # the second run cleaned up after itself too
