"""Provisioning: the DSN path touches only its own objects; auto explains what it tried; the local
cluster leaves nothing behind on Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness.db.docker import DockerServer, docker_engine_error
from harness.db.provision import provision
from harness.db.server import admin_connection
from harness.errors import ProvisionError
from tests.conftest import MINI
from tests.db.child import start_holding


def dsn_of(server) -> str:
    a = server.admin
    return f"host={a.host} port={a.port} user={a.user} dbname=postgres"


def test_dsn_server_gets_only_its_own_scratch_objects(pg_server, tmp_path):
    from harness.pipeline import EvalConfig, evaluate
    with admin_connection(pg_server.admin) as conn:
        conn.execute("DROP DATABASE IF EXISTS precious")
        conn.execute("CREATE DATABASE precious")
    with admin_connection(pg_server.admin, dbname="precious") as conn:
        conn.execute("CREATE TABLE keep (a int); INSERT INTO keep VALUES (1), (2)")
    before, roles_before = _databases(pg_server), _roles(pg_server)
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "by-district", "output": "SELECT ssqx, count(*) FROM rfgcpy GROUP BY 1"}) + "\n")
    result = evaluate(EvalConfig(benchmark=MINI, model=f"replay:{preds}", db=dsn_of(pg_server), out=tmp_path / "r",
                                 use_cache=False, progress=False, ids=frozenset({"by-district"})))
    assert result.items[0].status == "correct"
    assert _databases(pg_server) == before  # scratch databases dropped, nothing else touched
    assert _roles(pg_server) == roles_before  # its reader role is dropped too
    with admin_connection(pg_server.admin, dbname="precious") as conn:
        assert conn.execute("SELECT count(*) FROM keep").fetchone() == (2,)


def _roles(server) -> set[str]:
    with admin_connection(server.admin) as conn:
        return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


def _databases(server) -> set[str]:
    with admin_connection(server.admin) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def test_auto_prefers_txt2sql_db(monkeypatch, pg_server):
    monkeypatch.setenv("TXT2SQL_DB", dsn_of(pg_server))
    assert provision("auto").kind == "dsn"


def test_bad_dsn_names_the_server_and_the_fix():
    with pytest.raises(ProvisionError, match="cannot connect to .*Check host, port and credentials"):
        with provision("postgresql://nobody@127.0.0.1:1/postgres"):
            pass


def test_unknown_db_spec():
    with pytest.raises(ProvisionError, match="expected one of auto, local, docker"):
        provision("sqlite")


def test_docker_without_engine_fails_fast_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # whatever runs on this machine
    assert docker_engine_error() is not None
    t0 = time.monotonic()
    with pytest.raises(ProvisionError, match="no Docker engine answers.*container-engine.sh.*--db local"):
        with DockerServer():
            pass
    assert time.monotonic() - t0 < 5


def _cluster_dirs(base) -> list:
    return sorted(base.glob("txt2sql-pg-*"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_local_cluster_is_torn_down_on_signal(tmp_path, sig):
    """Ctrl-C (SIGINT) and SIGTERM stop the server and delete its directory: no orphan servers.

    The child first sets the dispositions an interactive launch gives (Python's KeyboardInterrupt for
    SIGINT, the default for SIGTERM): a child inherits ignored signals, and pytest started in the
    background of a non-interactive shell runs with SIGINT ignored."""
    base = Path(tempfile.mkdtemp(prefix="txt2sql-test-", dir="/tmp"))  # reachable by the postgres user
    os.chmod(base, 0o777)
    proc = start_holding("from harness.db.local import LocalCluster\n"
                         "with LocalCluster() as s:\n    print('ready', flush=True)\n    time.sleep(60)\n",
                         TXT2SQL_TMPDIR=str(base))
    (root,) = _cluster_dirs(base)
    assert (root / "data" / "postmaster.pid").exists()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while _cluster_dirs(base) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _cluster_dirs(base)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(root) not in ps
    base.rmdir()


def test_unreachable_temp_dir_is_a_clear_error(tmp_path, monkeypatch):
    from harness.db.local import LocalCluster
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another OS user")
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    monkeypatch.setenv("TXT2SQL_TMPDIR", str(hidden))
    with pytest.raises(ProvisionError, match="cannot enter .*TXT2SQL_TMPDIR"):
        LocalCluster().start()


def test_the_local_cluster_preloads_postgis(pg_server):
    """Loaded once in the postmaster, PostGIS is in every session from its start (no per-session load)."""
    from harness.db.local import postgis_library
    if postgis_library(pg_server.bindir) is None:
        pytest.skip("no postgis-3 library in the server's library directory")
    with admin_connection(pg_server.admin) as conn:
        assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("postgis-3",)


def test_no_docker_host_and_no_default_socket_is_answered_without_the_docker_client(monkeypatch, tmp_path):
    """The client would try only its default socket; when there is none, the answer needs no import."""
    import sys

    import harness.db.docker as docker_module
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(docker_module, "DEFAULT_SOCKET", str(tmp_path / "docker.sock"))
    monkeypatch.setitem(sys.modules, "docker", None)  # importing it now would raise ImportError
    why = docker_engine_error()
    assert why is not None and "no Docker engine answers" in why and str(tmp_path / "docker.sock") in why
