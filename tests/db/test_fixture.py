"""Fixture databases (harness/db/fixture.py) on a real PostGIS: the schema and PostGIS are built once per
benchmark database and copied into every data variant's template, and each variant's clone holds its own
data only."""

from __future__ import annotations

import shutil

import pytest

import harness.db.fixture as fixture
from harness.benchmark.loader import load_benchmark
from harness.db.fixture import FixtureDatabases
from harness.db.server import admin_connection
from tests.conftest import MINI


def _count(pg_server, dbname: str, table: str) -> int:
    with admin_connection(pg_server.admin, dbname=dbname) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else -1


def _rows_inserted(path, table: str) -> int:
    """Rows of the data file's one multi-row ``INSERT INTO table VALUES`` (one row a line)."""
    text = path.read_text(encoding="utf-8")
    values = text.split(f"INSERT INTO {table} VALUES", 1)[1].split(";", 1)[0]
    return sum(1 for line in values.splitlines() if line.strip().startswith("("))


def test_postgis_and_schema_are_built_once_and_each_variant_keeps_its_own_data(pg_server, monkeypatch, tmp_path):
    # variants named like the harness's own databases must not collide with them
    bench = tmp_path / "bench"
    shutil.copytree(MINI, bench)
    (bench / "data" / "v1.sql").rename(bench / "data" / "schema0.sql")
    (bench / "data" / "v2.sql").rename(bench / "data" / "tpl.sql")
    benchmark = load_benchmark(bench, "test")
    postgis: list[str] = []
    ensure = fixture.ensure_postgis

    def counted(conn, admin):
        postgis.append(conn.info.dbname)
        ensure(conn, admin)
    monkeypatch.setattr(fixture, "ensure_postgis", counted)
    with FixtureDatabases(pg_server, benchmark) as fx:
        clones = {variant: vdb.dbname for (_, variant), vdb in fx.databases.items()}
        assert set(clones) == {"schema0", "tpl"}
        assert len(postgis) == len(benchmark.databases) == 1
        counts = {variant: _count(pg_server, name, "rfgcpy") for variant, name in clones.items()}
        assert counts == {variant: _rows_inserted(bench / "data" / f"{variant}.sql", "rfgcpy") for variant in clones}
        assert counts["schema0"] != counts["tpl"]
        assert fx.checksums() == fx.checksums()
    with admin_connection(pg_server.admin) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (fx.prefix + "%",)).fetchone()
    assert left == (0,)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_a_variant_clone_has_the_reader_grants(mini_fixtures, variant):
    from harness.db.executor import SafeExecutor
    vdb = mini_fixtures.databases[("default", variant)]
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=2000, functions=mini_fixtures.functions(vdb))
    try:
        outcome = ex.run("SELECT count(*) FROM rfgcpy WHERE ST_X(geom) > 0")
    finally:
        ex.close()
    assert outcome.status == "ok", outcome
