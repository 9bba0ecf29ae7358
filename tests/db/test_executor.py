"""Safe execution against a real PostGIS: every escape the issue measured is refused or harmless, and
every query is bounded in time, rows and bytes."""

from __future__ import annotations

import os
import time
import tracemalloc

import psycopg
import pytest

from harness.db.executor import GeoValue, SafeExecutor
from harness.db.guard import Classification
from harness.db.server import admin_connection

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


def guard_off(monkeypatch) -> None:
    """Switch the first wall off, to show what the next ones do on their own."""
    import harness.db.executor as executor
    monkeypatch.setattr(executor, "classify", lambda sql, **_: Classification(True))


@pytest.fixture()
def slow_reader(mini_fixtures):
    ex = SafeExecutor(mini_fixtures.reader(mini_fixtures.variants("default")[0]), statement_timeout_ms=1000,
                      row_cap=1000)
    yield ex
    ex.close()


@pytest.mark.parametrize("sql,status", ESCAPES)
def test_escapes_are_refused_and_fixture_intact(mini_fixtures, reader, sql, status):
    before = mini_fixtures.checksums()
    outcome = reader.run(sql)
    assert outcome.status == status, outcome
    assert mini_fixtures.checksums() == before
    assert not os.path.exists("/tmp/txt2sql-pwned")


def test_reader_is_not_superuser_even_if_guard_is_bypassed(mini_fixtures):
    """Defence in depth: talk to the server as the reader role directly, skipping the guard."""
    vdb = mini_fixtures.variants("default")[0]
    with psycopg.connect(**mini_fixtures.reader(vdb).kwargs()) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW temp_file_limit").fetchone() == ("64MB",)
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
    guard_off(monkeypatch)
    outcome = reader.run("SELECT 1; DELETE FROM rfgcpy")
    assert outcome.status == "exec_error" and outcome.sqlstate == "42601"


def test_timeout_is_enforced_by_the_server(slow_reader):
    t0 = time.monotonic()
    outcome = slow_reader.run("SELECT count(*) FROM generate_series(1, 1000) a, generate_series(1, 1000) b, "
                              "generate_series(1, 1000) c")
    assert outcome.status == "timeout" and outcome.sqlstate == "57014", outcome
    assert time.monotonic() - t0 < 1.0 + 1.5
    assert slow_reader.run("SELECT 1").status == "ok"  # the next query is unaffected


def test_slow_rows_are_bounded_by_one_budget_not_one_per_fetch(slow_reader):
    """200 rows, each a 2M-row count (a fraction of a second): every row comes well within the timeout,
    the whole does not. With a per-FETCH timeout (a server-side cursor) this ran to the end; the budget
    is per query."""
    t0 = time.monotonic()
    outcome = slow_reader.run("SELECT g, (SELECT count(*) FROM generate_series(1, 2000 + g - g) a, "
                              "generate_series(1, 1000) b) FROM generate_series(1, 200) g")
    assert outcome.status == "timeout", outcome
    assert time.monotonic() - t0 < 1.0 + 1.5


def test_a_question_has_one_budget_over_its_data_variants(reader):
    """A prediction runs on every data variant; what the earlier variants spent is taken from the budget
    of the next (the scorer passes it), so a question, not each variant, is bounded by the timeout."""
    t0 = time.monotonic()
    outcome = reader.run("SELECT count(*) FROM generate_series(1, 1000) a, generate_series(1, 1000) b, "
                         "generate_series(1, 1000) c", budget_ms=300)
    assert outcome.status == "timeout" and time.monotonic() - t0 < 0.3 + 1.5, outcome
    spent = reader.run("SELECT 1", budget_ms=0)
    assert spent.status == "timeout" and "budget" in (spent.error or "")
    assert reader.run("SELECT 1", budget_ms=5_000_000).status == "ok"  # never more than the statement timeout


def test_geos_work_that_ignores_the_timeout_is_abandoned_at_the_budget(slow_reader):
    """ST_Buffer with 50M segments per quadrant runs in GEOS, which does not look at statement_timeout
    (6.9 s against a 2 s timeout in issue 11); the watchdog's cancel and, failing that, abandoning the
    session bound it."""
    t0 = time.monotonic()
    outcome = slow_reader.run("SELECT ST_NPoints(ST_Buffer(ST_MakePoint(0, 0), 1, 50000000))")
    seconds = time.monotonic() - t0
    assert outcome.status == "timeout", outcome
    assert seconds < 1.0 + 1.0 + 1.5, seconds  # budget + abandon grace + margin
    assert slow_reader.run("SELECT 1").status == "ok"


def test_sqlstate_decides_status(reader, monkeypatch):
    col = reader.run("SELECT jsdw FROM rfgcpy")
    assert (col.status, col.sqlstate) == ("exec_error", "42703")
    tab = reader.run("SELECT * FROM nope")
    assert (tab.status, tab.sqlstate) == ("exec_error", "42P01")
    syn = reader.run("SELECT FROM WHERE (")
    assert syn.status == "refused" and "cannot parse" in syn.error  # never sent: sqlglot cannot parse it
    guard_off(monkeypatch)
    server = reader.run("SELECT FROM WHERE (")
    assert (server.status, server.sqlstate) == ("exec_error", "42601")


def test_rows_are_bounded_and_memory_stays_small(mini_fixtures):
    vdb = mini_fixtures.variants("default")[0]
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=20000, row_cap=100_000)
    tracemalloc.start()
    try:
        # 10 million rows streamed (a nested loop over two small series, nothing materialised)
        outcome = ex.run("SELECT a, md5(b::text) FROM generate_series(1, 10000) a, generate_series(1, 1000) b")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ex.close()
    assert outcome.status == "ok", outcome
    assert outcome.result.capped and len(outcome.result.rows) == 100_000
    assert outcome.seconds < 10
    assert peak < 200 * 2**20  # 10M rows would be gigabytes


@pytest.mark.parametrize("sql", [
    "SELECT array_fill(1, ARRAY[1000000])",  # one row, one array of a million elements
    "SELECT repeat('x', 300000) FROM generate_series(1, 10)",  # ten large rows
    "SELECT 'x' FROM generate_series(1, 500000)",  # many small rows: the row cap is larger than this
])
def test_results_are_bounded_in_bytes_before_they_are_loaded(mini_fixtures, sql):
    vdb = mini_fixtures.variants("default")[0]
    small = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=5000, row_cap=10**6, byte_cap=2**20)
    large = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=5000, row_cap=10**6, byte_cap=2**30)
    refused = small.run(sql)
    assert refused.status == "exec_error" and "byte budget (1 MiB" in refused.error, refused
    assert large.run(sql).status == "ok"  # the same query within a larger budget: the budget decided


def test_one_huge_value_is_abandoned_while_it_arrives(mini_fixtures):
    """libpq receives a row whole before any loader can look at it (PostgreSQL allows up to 1 GB): the
    watchdog abandons the session when the harness's memory grows past its limit."""
    vdb = mini_fixtures.variants("default")[0]
    sql = "SELECT repeat('x', 80000000) AS s"
    small = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=10000, byte_cap=2**30,
                         max_memory_growth=16 * 2**20)
    refused = small.run(sql)
    assert refused.status == "exec_error" and "memory grew by more than 16 MiB" in refused.error, refused
    large = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=10000, byte_cap=2**30,
                         max_memory_growth=2**30)
    assert len(large.run(sql).result.rows[0][0]) == 80_000_000  # within a larger limit: the limit decided


def test_deep_json_gets_a_verdict(reader):
    """psycopg's JSON loader raised RecursionError at 5,000 levels, crashing the run; JSON loads as
    its text."""
    outcome = reader.run("SELECT (repeat('[', 5000) || repeat(']', 5000))::jsonb AS j")
    assert outcome.status == "ok", outcome
    assert outcome.result.types == ("jsonb",) and outcome.result.rows[0][0] == "[" * 5000 + "]" * 5000


def test_empty_result_keeps_its_columns(reader):
    outcome = reader.run("SELECT id, name FROM rfgcpy WHERE false")
    assert outcome.status == "ok" and outcome.result.rows == ()
    assert outcome.result.columns == ("id", "name") and outcome.result.types == ("int4", "text")


def test_geometry_values_come_back_typed(reader):
    outcome = reader.run("SELECT name, geom FROM aipoi ORDER BY id")
    assert outcome.status == "ok"
    assert outcome.result.types == ("text", "geometry")
    assert isinstance(outcome.result.rows[0][1], GeoValue)


def test_parsed_statement_is_used_instead_of_parsing_again(reader, monkeypatch):
    import sqlglot

    import harness.db.guard as guard
    tree = sqlglot.parse_one("SELECT count(*) FROM rfgcpy", read="postgres")

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again")
    monkeypatch.setattr(guard, "_parse", no_parse)
    assert reader.run("SELECT count(*) FROM rfgcpy", parsed=tree).result.rows == ((5,),)
    bad = sqlglot.parse_one("SELECT setseed(0.5)", read="postgres")
    assert reader.run("SELECT setseed(0.5)", parsed=bad).status == "refused"
    two = reader.run("SELECT count(*) FROM rfgcpy; DELETE FROM rfgcpy", parsed=tree)  # a tree of the first only
    assert two.status == "refused" and two.error.startswith("2 statements"), two


def test_checksum_sees_an_update_that_keeps_the_row_count(mini_fixtures, pg_server):
    """fixture_intact compares these checksums: an UPDATE changes no row count, only the rows' md5."""
    vdb = mini_fixtures.variants("default")[0]
    before = mini_fixtures.checksums()
    with admin_connection(pg_server.admin, dbname=vdb.dbname) as conn:
        conn.execute("UPDATE rfgcpy SET name = name || '!' WHERE id = (SELECT min(id) FROM rfgcpy)")
        try:
            after = mini_fixtures.checksums()
        finally:
            conn.execute("UPDATE rfgcpy SET name = left(name, -1) WHERE id = (SELECT min(id) FROM rfgcpy)")
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [f"{vdb.dbname}:public.rfgcpy"]
    assert before[changed[0]].split(":")[0] == after[changed[0]].split(":")[0]  # same row count
    assert mini_fixtures.checksums() == before


# --- golds: one session shared while the queries end ok -----------------------------------------

def _backend_pid(ex: SafeExecutor) -> int:
    outcome = ex.run("SELECT pg_backend_pid()")
    assert outcome.status == "ok", outcome
    return outcome.result.rows[0][0]


def test_a_shared_session_serves_queries_until_one_fails(mini_fixtures):
    vdb = mini_fixtures.variants("default")[0]
    shared = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=500, shared_session=True)
    fresh = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=500)
    try:
        first = _backend_pid(shared)
        assert _backend_pid(shared) == first
        assert shared.run("SELECT 1 / 0").status == "exec_error"
        second = _backend_pid(shared)
        assert second != first  # the failed query ended its session
        spin = "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
        assert shared.run(spin).status == "timeout"
        assert _backend_pid(shared) not in (first, second)  # so did the cancelled one
        assert len({_backend_pid(fresh) for _ in range(3)}) == 3  # the default: a session per query
    finally:
        shared.close()
        fresh.close()


def test_a_shared_session_leaves_no_transaction_open_between_queries(mini_fixtures):
    """Every query's transaction is rolled back, so a shared session never sees a snapshot or a lock of an
    earlier query: the server has no open transaction on it once a query has returned."""
    vdb = mini_fixtures.variants("default")[0]
    shared = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=2000, shared_session=True)
    try:
        pid = _backend_pid(shared)
        with admin_connection(mini_fixtures.server.admin) as conn:
            state = conn.execute("SELECT state, xact_start FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        assert state == ("idle", None)
    finally:
        shared.close()


def test_the_byte_budget_is_per_query_on_a_shared_session(mini_fixtures):
    vdb = mini_fixtures.variants("default")[0]
    shared = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=5000, byte_cap=64 * 1024,
                          functions=mini_fixtures.functions(vdb), shared_session=True)
    try:
        for _ in range(3):  # 40 KB each: three together would pass the 64 KiB budget
            assert shared.run("SELECT repeat('x', 40000)").status == "ok"
        assert shared.run("SELECT repeat('x', 70000)").status == "exec_error"
    finally:
        shared.close()


def test_executors_sharing_verdicts_classify_a_query_once_per_policy(mini_fixtures, monkeypatch):
    """The scorer's executors (one per data variant) share the guard's decisions: the same text under the
    same function policy is classified once, and the shared decision is the one classify gives."""
    import harness.db.executor as executor
    from harness.db.guard import NO_FUNCTIONS
    calls: list[str] = []
    classify = executor.classify

    def counted(sql, **kwargs):
        calls.append(sql)
        return classify(sql, **kwargs)
    monkeypatch.setattr(executor, "classify", counted)
    vdb = mini_fixtures.variants("default")[0]
    policy = mini_fixtures.functions(vdb)
    verdicts: executor.Verdicts = {}
    first, second, other = (SafeExecutor(mini_fixtures.reader(vdb), functions=f, verdicts=verdicts)
                            for f in (policy, policy, NO_FUNCTIONS))
    try:
        sql, refused = "SELECT count(*) FROM rfgcpy", "SELECT setseed(0.5)"
        assert first.run(sql).result.rows == second.run(sql).result.rows == ((5,),)
        assert first.run(refused).status == second.run(refused).status == "refused"
        assert calls == [sql, refused]
        # another policy is another decision: with no function allowed, count() is refused
        assert other.run(sql).status == "refused" and calls == [sql, refused, sql]
    finally:
        for ex in (first, second, other):
            ex.close()
