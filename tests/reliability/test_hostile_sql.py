"""Hostile SQL through the pipeline's execution path: nothing a prediction says can change the fixture,
reach outside the database, hold a lock past its query, or bring the harness down.

The corpus is data (``cases/hostile.tsv``); adding a case means adding a line. Each case is executed
*as written* (not through ``extract_sql``, which would already drop anything after the first statement),
by ``Scorer.execute`` -- the guard, the SELECT-only reader role, the read-only transaction, the
server-side cursor, ``statement_timeout`` and the infrastructure-fault handling -- on the mini fixture.
The whole corpus runs once per module; the invariants are then checked on what it left behind.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from harness.db.server import admin_connection
from harness.pipeline import EvalConfig, Scorer
from tests.conftest import MINI
from tests.golden import CaseFileError, _param

CASES = Path(__file__).parent / "cases" / "hostile.tsv"
STATUSES = {"ok", "exec_error", "timeout", "refused"}
# The byte-budget cases move 32 MiB before that budget stops them: 0.27-1.9 s on 2 cores (the slow end on
# a cold session, and a CI run once timed out at 1.5 s), so the wall-clock budget leaves them room.
TIMEOUT_MS = 3000
MARKER = Path("/tmp") / f"txt2sql-hostile-{uuid.uuid4().hex}"
_MACRO = re.compile(r"\{(nested_parens|long_sum|nested_calls|deep_json):(\d+)\}")
_EXPECTED = re.compile(r"^(ok|exec_error|timeout|refused)(?::([0-9A-Z]{5}))?$")


def _expand(sql: str) -> str:
    """``{marker}``, ``{surrogate}`` (a lone surrogate, which a UTF-8 file cannot hold), ``{nul}`` and the
    generated expressions, so the data file stays one readable line per case."""
    def macro(m: re.Match[str]) -> str:
        kind, n = m.group(1), int(m.group(2))
        if kind == "nested_parens":
            return "(" * n + "1" + ")" * n
        if kind == "long_sum":
            return "+".join(["1"] * n)
        if kind == "deep_json":
            return "'" + "[" * n + "]" * n + "'::jsonb"
        return "abs(" * n + "1" + ")" * n
    text = sql.replace("{marker}", str(MARKER)).replace("{surrogate}", "\ud800").replace("{nul}", "\x00")
    return _MACRO.sub(macro, text)


def hostile_cases(path: Path = CASES) -> list[object]:
    """``sql<TAB>status[:SQLSTATE]<TAB>comment`` per line: one exact outcome per case (and, where
    given, the exact SQLSTATE); ``#`` lines and blank lines skipped."""
    params = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) != 3:
            raise CaseFileError(f"{path}:{number}: expected 3 tab-separated cells (sql, expected, comment), "
                                f"got {len(cells)}")
        sql, expected, comment = cells
        m = _EXPECTED.match(expected)
        if m is None:
            raise CaseFileError(f"{path}:{number}: field 'expected' must be one status from {sorted(STATUSES)}, "
                                f"optionally with ':SQLSTATE', got {expected!r}")
        params.append(_param(path, number, comment, number, sql.replace("\\n", "\n"), (m.group(1), m.group(2))))
    return params


PARAMS = hostile_cases()


@dataclass
class CorpusRun:
    outcomes: dict[int, tuple[str, str | None, str]]  # line -> (status, sqlstate, detail)
    before: dict[str, str]
    after: dict[str, str]
    advisory_locks: list[tuple[object, ...]]
    seconds: float


@pytest.fixture(scope="module")
def corpus(pg_server, mini_fixtures) -> CorpusRun:
    MARKER.unlink(missing_ok=True)
    config = EvalConfig(benchmark=MINI, statement_timeout_ms=TIMEOUT_MS, row_cap=1000, progress=False)
    scorer = Scorer(pg_server, mini_fixtures, config)
    vdb = mini_fixtures.variants("default")[0]
    before = mini_fixtures.checksums()
    outcomes: dict[int, tuple[str, str]] = {}
    t0 = time.monotonic()
    try:
        for param in PARAMS:
            number, sql, _ = param.values
            try:
                ex = scorer.execute(vdb, _expand(sql))
                outcomes[number] = (ex.status, ex.sqlstate, f"SQLSTATE {ex.sqlstate}: {ex.error}")
            except Exception as exc:  # noqa: BLE001 -- any exception here is a harness crash: record it
                outcomes[number] = (f"crash:{type(exc).__name__}", None, str(exc)[:300])
        # with the reader connections still open: a session-level lock would show here
        with admin_connection(pg_server.admin) as conn:
            locks = conn.execute("SELECT locktype, objid, pid, mode FROM pg_locks "
                                 "WHERE locktype = 'advisory'").fetchall()
    finally:
        scorer.close()
    seconds = time.monotonic() - t0
    return CorpusRun(outcomes, before, mini_fixtures.checksums(), locks, seconds)


def test_corpus_is_large_enough():
    assert len(PARAMS) >= 150


@pytest.mark.parametrize("number,sql,expected", PARAMS)
def test_hostile_case_has_expected_status(corpus, number, sql, expected):
    status, sqlstate, detail = corpus.outcomes[number]
    want_status, want_sqlstate = expected
    where = f"{CASES.name}:{number}: {sql[:120]!r} -> {status} ({detail})"
    assert status == want_status, f"{where}; expected {want_status}"
    if want_sqlstate:
        assert sqlstate == want_sqlstate, f"{where}; expected SQLSTATE {want_sqlstate}"


def test_fixture_checksum_unchanged_after_corpus(corpus):
    assert corpus.before == corpus.after


def test_no_file_appeared_outside_the_database(corpus):
    assert not MARKER.exists(), f"{MARKER} was created by a query"


def test_no_advisory_lock_outlives_the_corpus(corpus):
    assert corpus.advisory_locks == []


def test_server_alive_and_normal_query_works_after_corpus(corpus, pg_server, reader):
    assert pg_server.is_alive()
    ok = reader.run("SELECT count(*) FROM rfgcpy")
    assert ok.status == "ok" and ok.result.rows == ((5,),)


def test_timeouts_are_enforced_by_the_engine(corpus):
    """Seven cases run for a long time or forever unless they are stopped; the whole corpus must still
    be quick."""
    assert corpus.seconds < 60, f"corpus took {corpus.seconds:.1f}s"


def test_advisory_lock_is_released_even_if_the_guard_misses_it(mini_fixtures, pg_server, monkeypatch):
    """Defence in depth: with the guard switched off and the role allowed to take advisory locks for
    this test, the session lock is still gone after the query (each query has a session of its own), so
    it cannot block the next one."""
    from harness.db.executor import SafeExecutor
    vdb = mini_fixtures.variants("default")[0]
    grant = f"EXECUTE ON FUNCTION pg_advisory_lock(bigint) %s {mini_fixtures.reader_role}"
    with admin_connection(pg_server.admin, dbname=vdb.dbname) as conn:
        conn.execute("GRANT " + grant % "TO")
    guard_off(monkeypatch)
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=TIMEOUT_MS)
    try:
        assert ex.run("SELECT pg_advisory_lock(4243)").status == "ok"
        with admin_connection(pg_server.admin) as conn:
            held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4243").fetchone()
        assert held == (0,)
    finally:
        ex.close()
        with admin_connection(pg_server.admin, dbname=vdb.dbname) as conn:
            conn.execute("REVOKE " + grant % "FROM")


def test_writes_fail_even_if_the_guard_misses_them(mini_fixtures, monkeypatch):
    """Defence in depth: without the guard, the reader role and the read-only transaction still stop
    a write, and the fixture does not change. Each fails, with the SQLSTATE of the layer that stopped it."""
    from harness.db.executor import SafeExecutor
    guard_off(monkeypatch)
    before = mini_fixtures.checksums()
    ex = SafeExecutor(mini_fixtures.reader(mini_fixtures.variants("default")[0]), statement_timeout_ms=TIMEOUT_MS)
    try:
        for sql, sqlstate in (("WITH d AS (DELETE FROM rfgcpy RETURNING 1) SELECT count(*) FROM d", "25006"),
                              ("WITH d AS (DELETE FROM rfgcpy RETURNING *) SELECT geom ~= geom FROM d", "25006"),
                              ("SELECT lo_from_bytea(0, 'x')", "42501"),
                              (f"SELECT lo_export(lo_from_bytea(0, 'x'), '{MARKER}')", "42501"),
                              ("SELECT set_config('default_transaction_read_only', 'off', false)", "42501"),
                              ("SELECT setseed(0.5)", "42501"), ("SELECT nextval(c.oid::regclass) FROM pg_class c LIMIT 1", "42501"),
                              ("SELECT pg_logical_emit_message(false, 'txt2sql', 'x')", "42501"),
                              ("SELECT DropGeometryTable('rfgcpy')", "42501"),
                              ("SELECT * FROM ts_stat('SELECT 1')", "42501")):
            out = ex.run(sql)
            assert (out.status, out.sqlstate) == ("exec_error", sqlstate), (sql, out)
    finally:
        ex.close()
    assert mini_fixtures.checksums() == before
    assert not MARKER.exists()
    with pytest.raises(psycopg.Error):  # and a superuser-only file read fails as the reader role
        with psycopg.connect(**mini_fixtures.reader(mini_fixtures.variants("default")[0]).kwargs()) as conn:
            conn.execute("SELECT pg_read_file('/etc/passwd')")


def guard_off(monkeypatch) -> None:
    """Switch the first wall off, to show what the next ones do on their own."""
    import harness.db.executor as executor
    from harness.db.guard import Classification
    monkeypatch.setattr(executor, "classify", lambda sql, **_: Classification(True))


def test_deeply_nested_prediction_does_not_crash_the_pipeline(tmp_path, pg_tmp, monkeypatch):
    """Through the whole pipeline (extraction, diagnostics, exact match, execution): a prediction nested
    3,000 deep with no repeated run (so not flagged as a loop) is refused, and the run completes."""
    import json

    from harness.pipeline import evaluate
    monkeypatch.setenv("TXT2SQL_TMPDIR", str(pg_tmp))
    sql = "SELECT " + "".join(f"({i} + " for i in range(3000)) + "1" + "".join(f" + {i})" for i in range(3000))
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "count-near", "output": sql + ";"}) + "\n", encoding="utf-8")
    result = evaluate(EvalConfig(benchmark=MINI, model=f"replay:{pred}", db="local", out=tmp_path / "run",
                                 use_cache=False, progress=False, ids=frozenset({"count-near"})))
    (item,) = result.items
    assert item.status == "refused" and "nested too deeply" in (item.error or "")
