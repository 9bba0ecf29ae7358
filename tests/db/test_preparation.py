"""The databases prepared in a thread beside the model load (harness/db/preparation.py), on real throwaway
PostGIS clusters: ``ready()`` hands over the fixture databases and their checksums; a failed preparation
raises from ``ready()`` the error the sequential ``with server, FixtureDatabases(...)`` raises; leaving the
block tears everything down whatever happened, and SIGTERM still exits through that teardown."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.benchmark.loader import load_benchmark
from harness.db.fixture import FixtureDatabases
from harness.db.local import LocalCluster
from harness.db.preparation import DatabasePreparation
from harness.errors import BenchmarkError, ProvisionError
from tests.db.child import start_holding
from tests.reliability.conftest import server_pids


@pytest.fixture()
def cluster_dir(monkeypatch) -> Iterator[Path]:
    """This test's clusters (TXT2SQL_TMPDIR), where the ``postgres`` OS user can reach them."""
    root = Path(tempfile.mkdtemp(prefix="txt2sql-preparation-"))
    os.chmod(root, 0o755)
    monkeypatch.setenv("TXT2SQL_TMPDIR", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _cluster() -> LocalCluster:
    try:
        return LocalCluster()
    except ProvisionError as exc:
        pytest.skip(f"no local PostgreSQL + PostGIS: {exc}")


def _nothing_left(under: Path, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while (server_pids(under) or list(under.glob("txt2sql-pg-*"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not server_pids(under) and not list(under.glob("txt2sql-pg-*"))


@pytest.fixture()
def broken_benchmark(tmp_path):
    """A benchmark whose data only fails once PostgreSQL loads it."""
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (a integer);\n", encoding="utf-8")
    (tmp_path / "data.sql").write_text("INSERT INTO t VALUES (1);\nINSERT INTO t VALUES ('not a number');\n",
                                       encoding="utf-8")
    (tmp_path / "test.jsonl").write_text('{"question": "多少行", "answer": "SELECT count(*) FROM t"}\n',
                                         encoding="utf-8")
    return load_benchmark(tmp_path, "test")


def test_ready_hands_over_the_fixture_databases_and_their_checksums(cluster_dir, mini_benchmark):
    server = _cluster()
    with DatabasePreparation(server, mini_benchmark) as databases:
        ready = databases.ready()
        assert set(ready.fixtures.databases) == {("default", v.name)
                                                 for v in mini_benchmark.databases["default"].variants}
        assert ready.checksums == ready.fixtures.checksums()
        assert server.is_alive() and databases.seconds > 0
    assert _nothing_left(cluster_dir)


def test_a_failed_preparation_raises_the_sequential_error_from_ready(cluster_dir, broken_benchmark):
    with pytest.raises(BenchmarkError) as sequential:
        with _cluster() as server, FixtureDatabases(server, broken_benchmark):
            pass
    with DatabasePreparation(_cluster(), broken_benchmark) as databases:
        with pytest.raises(BenchmarkError) as prepared:
            databases.ready()
    assert str(prepared.value) == str(sequential.value)
    assert "failed to load into PostgreSQL" in str(prepared.value) and "data.sql:2" in str(prepared.value)
    assert _nothing_left(cluster_dir)


class LateCluster(LocalCluster):
    """Begins its start only after the block's body has failed."""

    def start(self) -> None:
        time.sleep(0.5)
        super().start()


def test_leaving_before_the_preparation_ends_waits_for_it_then_tears_down(cluster_dir, mini_benchmark):
    """The model load fails before the server has even begun to start: the teardown must wait for the
    thread, or the server it then starts would outlive the run."""
    try:
        server = LateCluster()
    except ProvisionError as exc:
        pytest.skip(f"no local PostgreSQL + PostGIS: {exc}")
    with pytest.raises(RuntimeError, match="the model did not load"):
        with DatabasePreparation(server, mini_benchmark) as databases:
            raise RuntimeError("the model did not load")
    time.sleep(1)  # past the late start: a teardown that did not wait would leave that server running
    assert _nothing_left(cluster_dir, timeout=2)
    assert not databases.fixtures.databases  # cancelled: no fixture databases were built after the start


def test_release_tears_down_in_the_background_and_exit_waits_for_it(cluster_dir, mini_benchmark):
    server = _cluster()
    with DatabasePreparation(server, mini_benchmark) as databases:
        databases.ready()
        databases.release()
    assert not server.is_alive() and databases.teardown_seconds > 0
    assert _nothing_left(cluster_dir)


def test_sigterm_exits_through_the_teardown(cluster_dir):
    """SIGTERM arriving in the main thread (the model loading) is a normal exit (143) that tears the
    server down, although the server was started from the preparation's thread, where no signal handler
    can be installed."""
    proc = start_holding("from harness.benchmark.loader import load_benchmark\n"
                         "from harness.db.local import LocalCluster\n"
                         "from harness.db.preparation import DatabasePreparation\n"
                         "from tests.conftest import MINI\n"
                         "with DatabasePreparation(LocalCluster(), load_benchmark(MINI, 'test')) as databases:\n"
                         "    databases.ready()\n"
                         "    print('ready', flush=True)\n"
                         "    time.sleep(60)\n")
    try:
        assert list(cluster_dir.glob("txt2sql-pg-*"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # sys.exit(143), not death by the signal
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _nothing_left(cluster_dir)
