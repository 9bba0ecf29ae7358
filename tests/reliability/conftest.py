"""Helpers for the reliability tests: replayed predictions covering every status on the mini benchmark,
the CLI in a subprocess, and a look at which PostgreSQL servers are running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MINI, REPO

# one prediction per mini question, chosen so that a run has every kind of verdict
PREDICTIONS = [
    {"id": "count-near", "output": "```sql\nSELECT count(*) FROM rfgcpy r, aipoi p WHERE p.name = '市民中心站' AND "
                                   "ST_DWithin(r.geom::geography, p.geom::geography, 500);\n```"},
    {"id": "by-district", "output": "SELECT ssqx, count(*) FROM rfgcpy GROUP BY ssqx;"},
    {"id": "largest", "output": "SELECT name FROM rfgcpy ORDER BY mj DESC LIMIT 2;"},
    {"id": "names", "output": "DROP TABLE rfgcpy;"},
    {"id": "in-district", "output": "SELECT r.nme FROM rfgcpy r;"},
    {"id": "broken-gold", "output": "SELECT 1;"},
]
EXPECTED = {"count-near": "correct", "by-district": "correct", "largest": "wrong_result", "names": "refused",
            "in-district": "exec_error", "broken-gold": "gold_error"}
COMPARED = ("status", "predicted_sql", "execution_match")


@pytest.fixture()
def predictions(tmp_path) -> Path:
    path = tmp_path / "pred.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PREDICTIONS), encoding="utf-8")
    return path


def verdicts(results: Path) -> dict[str, tuple[object, ...]]:
    """id -> (status, predicted_sql, execution_match) from a results.jsonl."""
    out = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["id"]] = tuple(rec[k] for k in COMPARED)
    return out


def cli_argv(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.launch_cli", "eval", "--benchmark", str(MINI),
            "--split", "test", "--db", "local", "--model", model, "--out", str(out), "--batch-size", "1",
            "--statement-timeout", "2", "--no-progress", *extra]


@pytest.fixture()
def pg_tmp() -> Iterator[Path]:
    """A directory for this test's clusters (TXT2SQL_TMPDIR), outside pytest's tmp_path: pytest's
    directories are 0700 and the server, run as the ``postgres`` OS user, could not reach inside."""
    root = Path(tempfile.mkdtemp(prefix="txt2sql-reliability-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def cli_env(*, cache: Path, counter: Path, tmpdir: Path, delay: float = 0.0) -> dict[str, str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    os.chmod(tmpdir, 0o755)
    return dict(os.environ, TXT2SQL_CACHE=str(cache), TXT2SQL_TEST_COUNTER=str(counter),
                TXT2SQL_TEST_DELAY=str(delay), TXT2SQL_TMPDIR=str(tmpdir), PYTHONPATH=str(REPO))


def run_cli(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def generated(counter: Path) -> list[tuple[str, str]]:
    """(pid, question id) per item a counted backend really generated."""
    if not counter.exists():
        return []
    return [tuple(line.split("\t")) for line in counter.read_text(encoding="utf-8").splitlines() if line]  # type: ignore[misc]


def server_pids(under: Path) -> list[int]:
    """Processes of any PostgreSQL cluster below ``under``: the postmaster names its data dir on its
    command line, and every server process (backends, checkpointer, ...) runs with the data dir as cwd."""
    pids = []
    prefix = str(under)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(prefix) or ("postgres" in cmd and prefix in cmd):
            pids.append(int(entry.name))
    return pids
