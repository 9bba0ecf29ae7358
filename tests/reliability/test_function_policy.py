"""The function allow-list (issue 11): the guard decides from pg_proc, the role refuses what the guard
refuses, and nothing a prediction does to its session reaches the next query.

Each defence is shown on its own: the guard with the role unchanged, the role with the guard switched
off, and the fresh session with both switched off.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from harness.db.executor import SafeExecutor
from harness.db.guard import HARMLESS_VOLATILE, NEVER_ALLOWED, SYNTAX_FORMS, classify
from harness.db.server import admin_connection
from tests.reliability.test_hostile_sql import guard_off

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@pytest.fixture()
def vdb(mini_fixtures):
    return mini_fixtures.variants("default")[0]


def _catalogue(pg_server, vdb, role: str) -> tuple[set[str], set[str]]:
    """(every routine name, names with a routine ``role`` may execute) in the clone."""
    with admin_connection(pg_server.admin, dbname=vdb.dbname) as conn:
        rows = conn.execute("SELECT proname, bool_or(has_function_privilege(%s, oid, 'EXECUTE')) "
                            "FROM pg_proc GROUP BY proname", (role,)).fetchall()
    return {r[0] for r in rows}, {r[0] for r in rows if r[1]}


def test_allow_list_comes_from_the_catalogue(mini_fixtures, vdb):
    allowed = mini_fixtures.functions(vdb).allowed
    for name in ("count", "st_dwithin", "st_buffer", "st_area", "string_agg", "now", "random", "row_number"):
        assert name in allowed, name
    for name in ("setseed", "nextval", "pg_sleep", "ts_stat", "ts_rewrite", "gettransactionid", "pg_read_file",
                 "dropgeometrytable", "addgeometrycolumn", "pg_logical_emit_message", "txid_current",
                 "brin_summarize_new_values", "gin_clean_pending_list", "pg_export_snapshot"):
        assert name not in allowed, name
    assert HARMLESS_VOLATILE - {"random_normal"} <= allowed and not (NEVER_ALLOWED & allowed)  # (PostgreSQL 16+)


def test_role_and_guard_agree_on_every_function(mini_fixtures, pg_server, vdb):
    """After provisioning, the names the reader role may execute are exactly the guard's allow-list
    (a superuser admin revoked the rest from PUBLIC in the run's template)."""
    _, executable = _catalogue(pg_server, vdb, mini_fixtures.reader_role)
    allowed = mini_fixtures.functions(vdb).allowed
    assert sorted(executable - allowed) == []
    assert sorted(allowed - executable) == []


def test_every_refused_catalogue_name_is_refused_however_sqlglot_maps_it(mini_fixtures, pg_server, vdb):
    """sqlglot turns many names into typed functions (random -> Rand, strpos -> StrPosition) and the
    guard maps them back; no refused name may come back as an allowed one, with 0 to 3 arguments."""
    policy = mini_fixtures.functions(vdb)
    names, _ = _catalogue(pg_server, vdb, mini_fixtures.reader_role)
    refused = sorted(n for n in names - policy.allowed if _PLAIN_NAME.match(n) and n not in SYNTAX_FORMS)
    assert len(refused) > 250  # every volatile and non-executable routine of PostgreSQL and PostGIS
    leaks = []
    for name in refused:
        for args in ("", "1", "1, 2", "1, 2, 3"):
            sql = f"SELECT {name}({args})"
            if classify(sql, functions=policy).allowed:
                leaks.append(sql)
    assert leaks == []


def test_no_syntax_form_shadows_a_refused_function(mini_fixtures, pg_server, vdb):
    """Keywords the guard lets through as grammar (CAST, COALESCE, ...) must not be names of refused
    routines, or calling that routine would pass."""
    names, _ = _catalogue(pg_server, vdb, mini_fixtures.reader_role)
    assert sorted((SYNTAX_FORMS & names) - mini_fixtures.functions(vdb).allowed) == []


def test_the_role_refuses_what_the_guard_refuses(mini_fixtures, vdb):
    """Straight to the server as the reader role, no harness in between."""
    with psycopg.connect(**mini_fixtures.reader(vdb).kwargs(), autocommit=True) as conn:
        for sql in ("SELECT setseed(0.5)", "SELECT * FROM ts_stat('SELECT ''a''::tsvector')",
                    "SELECT pg_logical_emit_message(false, 'p', 'x')", "SELECT gettransactionid()",
                    "SELECT EnableLongTransactions()", "SELECT pg_sleep(0)", "SELECT pg_advisory_lock(1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        assert conn.execute("SELECT random() < 2, ST_Area(ST_MakeEnvelope(0, 0, 1, 1))").fetchone() == (True, 1.0)


def test_setseed_does_not_leak_into_the_next_query(mini_fixtures, pg_server, vdb, monkeypatch):
    """Issue 11 item 2: setseed survived rollback and DISCARD ALL, so a prediction fixed what the next
    gold's random() returned. With the guard switched off and the role allowed to call setseed for this
    test, only the fresh session per query is left, and it is enough."""
    seeded_sql = "SELECT setseed(0.5), random()"
    with admin_connection(pg_server.admin, dbname=vdb.dbname) as conn:
        seeded = conn.execute(seeded_sql).fetchone()[1]  # what random() gives right after setseed(0.5)
        conn.execute("SELECT setseed(0.5)")
        assert conn.execute("SELECT random()").fetchone()[0] == seeded  # the leak, within one session
        conn.execute(f"GRANT EXECUTE ON FUNCTION setseed(double precision) TO {mini_fixtures.reader_role}")
    guard_off(monkeypatch)
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=1500)
    try:
        predicted = ex.run("SELECT setseed(0.5)")
        assert predicted.status == "ok", predicted  # it ran: neither the guard nor the role stopped it
        gold = [ex.run("SELECT random()").result.rows[0][0] for _ in range(3)]
    finally:
        ex.close()
        with admin_connection(pg_server.admin, dbname=vdb.dbname) as conn:
            conn.execute(f"REVOKE EXECUTE ON FUNCTION setseed(double precision) FROM {mini_fixtures.reader_role}")
    assert seeded not in gold
    assert len(set(gold)) == 3  # each query starts from its own unseeded session


def test_settings_and_prepared_statements_do_not_leak(mini_fixtures, vdb, monkeypatch):
    """Whatever a query sets in its session is gone for the next one, even with the guard off."""
    guard_off(monkeypatch)
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=1500)
    try:
        assert ex.run("SELECT set_config('application_name', 'leaked', false)").status == "exec_error"
        after = ex.run("SELECT current_setting('application_name'), current_setting('statement_timeout')")
        assert after.result.rows[0] != ("leaked",) and after.result.rows[0][1] == "1500ms"
    finally:
        ex.close()


def test_an_invented_function_is_sent_and_fails_as_undefined(mini_fixtures, vdb):
    """A name no pg_proc row has (a model's ST_Sum) runs nothing: it is an exec_error 42883, not a refusal
    that the gate would count as an unsafe query; a refused real name stays refused."""
    policy = mini_fixtures.functions(vdb)
    assert classify("SELECT st_sum(population) FROM district", functions=policy).allowed
    assert not classify("SELECT setseed(0.5)", functions=policy).allowed
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=2000, functions=policy)
    try:
        run = ex.run("SELECT ST_Sum(1)")
    finally:
        ex.close()
    assert (run.status, run.sqlstate) == ("exec_error", "42883")

