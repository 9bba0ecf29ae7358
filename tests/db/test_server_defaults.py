"""Any server's defaults: a server initialised as SQL_ASCII, and a DSN role that may create databases
and roles but not the (untrusted) postgis extension. Each on its own throwaway local cluster."""

from __future__ import annotations

import json

import pytest

from harness.db.local import LocalCluster
from harness.db.server import admin_connection
from harness.errors import ProvisionError
from tests.conftest import MINI

ROLE = "txt2sql_test_limited"


def _cluster(**kwargs) -> LocalCluster:
    try:
        return LocalCluster(**kwargs)
    except ProvisionError as exc:
        pytest.skip(f"no local PostgreSQL + PostGIS: {exc}")


@pytest.fixture()
def sql_ascii_server():
    with _cluster(initdb_options=("-E", "SQL_ASCII", "--locale=C")) as server:
        yield server


@pytest.fixture()
def utf8_server():
    with _cluster() as server:
        yield server


def limited_dsn(server) -> str:
    """A role with CREATEDB and CREATEROLE (what the README asked for), not a superuser."""
    with admin_connection(server.admin) as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB CREATEROLE NOSUPERUSER")
    return f"host={server.admin.host} port={server.admin.port} user={ROLE} dbname=postgres"


def run_one(tmp_path, db: str, name: str = "r"):
    from harness.pipeline import EvalConfig, evaluate
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "by-district", "output": "SELECT ssqx, count(*) FROM rfgcpy GROUP BY 1"}) + "\n")
    return evaluate(EvalConfig(benchmark=MINI, model=f"replay:{preds}", db=db, out=tmp_path / name,
                               use_cache=False, progress=False, ids=frozenset({"by-district"})))


def _databases(server) -> set[str]:
    with admin_connection(server.admin) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def test_sql_ascii_server_gets_utf8_databases(sql_ascii_server, mini_benchmark):
    from harness.db.fixture import FixtureDatabases
    with admin_connection(sql_ascii_server.admin) as conn:
        assert conn.execute("SHOW server_encoding").fetchone()[0] in ("SQL_ASCII", b"SQL_ASCII")
    with FixtureDatabases(sql_ascii_server, mini_benchmark) as fx:
        for vdb in fx.databases.values():
            with admin_connection(sql_ascii_server.admin, dbname=vdb.dbname) as conn:
                assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
                districts = {r[0] for r in conn.execute("SELECT DISTINCT ssqx FROM rfgcpy").fetchall()}
                assert any(any("\u4e00" <= ch <= "\u9fff" for ch in d) for d in districts if d)


def test_sql_ascii_server_scores_like_any_other(sql_ascii_server, tmp_path):
    dsn = f"host={sql_ascii_server.admin.host} port={sql_ascii_server.admin.port} user=postgres dbname=postgres"
    result = run_one(tmp_path, dsn)
    assert result.items[0].status == "correct"
    assert result.summary.fixture_intact is True


def test_role_that_cannot_create_postgis_gets_one_clear_error(utf8_server, tmp_path):
    before = _databases(utf8_server)
    with pytest.raises(ProvisionError) as info:
        run_one(tmp_path, limited_dsn(utf8_server))
    message = str(info.value)
    assert f"PostGIS is not available to role '{ROLE}'" in message
    assert "template1 has no PostGIS to inherit" in message
    assert "CREATE EXTENSION postgis;` in template1" in message
    assert _databases(utf8_server) == before  # its half-built scratch databases are dropped


def test_role_inherits_postgis_from_template1(utf8_server, tmp_path):
    dsn = limited_dsn(utf8_server)
    with admin_connection(utf8_server.admin, dbname="template1") as conn:
        conn.execute("CREATE EXTENSION postgis")  # what the error tells a superuser to do
    before = _databases(utf8_server)
    result = run_one(tmp_path, dsn)
    assert result.items[0].status == "correct"
    assert result.summary.fixture_intact is True
    assert _databases(utf8_server) == before


def test_sql_ascii_template1_with_postgis_is_named_in_the_error(sql_ascii_server, tmp_path):
    dsn = limited_dsn(sql_ascii_server)
    with admin_connection(sql_ascii_server.admin, dbname="template1") as conn:
        conn.execute("CREATE EXTENSION postgis")
    with pytest.raises(ProvisionError, match="template1 is SQL_ASCII, not UTF8"):
        run_one(tmp_path, dsn)
