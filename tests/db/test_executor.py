"""Safe execution against a real PostGIS: every escape the issue measured is refused or harmless."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from harness.db.executor import GeoValue, SafeExecutor

ESCAPES = [
    # (sql, expected status) -- measured escapes of a READ ONLY transaction, and superuser-only powers
    ("SET TRANSACTION READ WRITE; DROP TABLE rfgcpy", "refused"),
    ("COMMIT; BEGIN READ WRITE; DROP TABLE rfgcpy", "refused"),
    ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/txt2sql-pwned'", "refused"),
    ("DROP TABLE rfgcpy", "refused"),
    ("DELETE FROM rfgcpy", "refused"),
    ("WITH d AS (DELETE FROM rfgcpy RETURNING *) SELECT count(*) FROM d", "refused"),
    ("SELECT * INTO stolen FROM rfgcpy", "refused"),
    ("SELECT pg_read_file('/etc/passwd')", "refused"),
    ("SELECT lo_import('/etc/passwd')", "refused"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "refused"),
]


@pytest.mark.parametrize("sql,status", ESCAPES)
def test_escapes_are_refused_and_fixture_intact(mini_fixtures, reader, sql, status):
    before = mini_fixtures.checksums()
    outcome = reader.run(sql)
    assert outcome.status == status, outcome
    assert mini_fixtures.checksums() == before
    assert not os.path.exists("/tmp/txt2sql-pwned")


def test_reader_is_not_superuser_even_if_guard_is_bypassed(mini_fixtures):
    """Defence in depth: talk to the server as the reader role directly, skipping the guard."""
    import psycopg
    vdb = mini_fixtures.variants("default")[0]
    with psycopg.connect(**mini_fixtures.reader(vdb).kwargs()) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        for sql in ("DROP TABLE rfgcpy", "COPY (SELECT 1) TO PROGRAM 'true'", "SELECT pg_read_file('/etc/passwd')",
                    "CREATE TABLE x (a int)"):
            with pytest.raises(psycopg.Error):
                conn.execute(sql)
            conn.rollback()
        conn.execute("SET TRANSACTION READ WRITE")  # escapes the read-only transaction ...
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # ... but the role can only SELECT
            conn.execute("DELETE FROM rfgcpy")
        conn.rollback()


def test_one_statement_per_execution_even_when_guard_would_allow(reader, monkeypatch):
    import harness.db.executor as executor
    from harness.db.guard import Classification
    monkeypatch.setattr(executor, "classify", lambda sql: Classification(True))
    outcome = reader.run("SELECT 1; DELETE FROM rfgcpy")
    assert outcome.status == "exec_error" and outcome.sqlstate == "42601"


def test_timeout_is_enforced_by_the_server(reader):
    outcome = reader.run("SELECT pg_sleep(30)")
    assert outcome.status == "timeout" and outcome.sqlstate == "57014"
    assert outcome.seconds < 5
    assert reader.run("SELECT 1").status == "ok"  # the connection is usable afterwards


def test_sqlstate_decides_status(reader):
    col = reader.run("SELECT jsdw FROM rfgcpy")
    assert (col.status, col.sqlstate) == ("exec_error", "42703")
    tab = reader.run("SELECT * FROM nope")
    assert (tab.status, tab.sqlstate) == ("exec_error", "42P01")
    syn = reader.run("SELECT FROM WHERE (")
    assert syn.status in ("refused", "exec_error")


def test_rows_are_bounded_and_memory_stays_small(mini_fixtures):
    vdb = mini_fixtures.variants("default")[0]
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=20000, row_cap=100_000)
    tracemalloc.start()
    try:
        outcome = ex.run("SELECT g, md5(g::text) FROM generate_series(1, 10000000) g")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ex.close()
    assert outcome.status in ("ok", "timeout")
    if outcome.status == "ok":
        assert outcome.result.capped and len(outcome.result.rows) == 100_000
    assert peak < 200 * 2**20  # 10M rows would be gigabytes


def test_geometry_values_come_back_typed(reader):
    outcome = reader.run("SELECT name, geom FROM aipoi ORDER BY id")
    assert outcome.status == "ok"
    assert outcome.result.types == ("text", "geometry")
    assert isinstance(outcome.result.rows[0][1], GeoValue)
