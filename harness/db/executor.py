"""Safe execution of one query: classified first (against the database's function allow-list), then run
as the read-only role in a fresh session, as one statement streamed row by row (extended protocol, so a
second statement is a syntax error), in a READ ONLY transaction that is always rolled back.

Bounds, whatever the query does: ``statement_timeout`` in the engine for the whole statement, and a
wall-clock budget enforced from outside (a watchdog thread sends cancel requests, which also interrupt
PostGIS/GEOS work that does not look at the timeout); a row cap and a byte budget on the result, checked
row by row as it arrives, so neither many rows nor a few huge ones can take the harness's memory.

Outcomes are keyed by SQLSTATE, never by message text.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.adapt import Loader
from psycopg.types.string import TextLoader

from harness.db.guard import Classification, FunctionPolicy, classify
from harness.db.server import ConnInfo
from harness.scoring.status import ExecStatus  # the one status vocabulary

if TYPE_CHECKING:
    from sqlglot import exp

DEFAULT_ROW_CAP = 100_000
DEFAULT_STATEMENT_TIMEOUT_MS = 10_000
# Bytes of a result as the server sends them (text format), counted value by value before each is
# loaded: Python objects take up to about five times that (an int[] of one-digit elements).
DEFAULT_BYTE_CAP = 32 * 2**20
# After the budget is spent the watchdog repeats its cancel request this often, in case one arrived
# between two statements and was ignored.
_CANCEL_REPEAT_S = 0.25
# A query still running this long after its budget (and the cancel requests) is abandoned.
ABANDON_GRACE_S = 1.0
# A query during which the harness's resident memory grows by more than this is abandoned (a single
# huge row, which libpq receives whole, then copies once into its result).
MAX_MEMORY_GROWTH = 256 * 2**20
_POLL_S = 0.01
# Rows per libpq chunk (libpq 17+; one row at a time before): memory stays bounded by the watchdog.
_CHUNK = 500 if psycopg.capabilities.has_stream_chunked() else 1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SPATIAL_TYPES = ("geometry", "geography")
# Connection-level failures: the server went away, not the query's fault.
_CONNECTION_SQLSTATE_CLASSES = ("08", "57P")


@dataclass(frozen=True)
class GeoValue:
    """A geometry/geography cell as the server sent it (hex EWKB); compared topologically in scoring."""

    hex: str
    kind: str  # "geometry" | "geography"

    def __str__(self) -> str:  # for diffs and reports
        return f"{self.kind}({self.hex[:24]}...)"


@dataclass(frozen=True)
class ResultSet:
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    capped: bool = False  # the row cap was reached: rows is a prefix


@dataclass(frozen=True)
class Execution:
    status: ExecStatus
    result: ResultSet | None = None
    sqlstate: str | None = None
    error: str | None = None
    seconds: float = 0.0


class ConnectionLost(Exception):
    """The connection broke during a query; the caller decides: server down (infrastructure) or the
    query killed its own session."""


class ResultTooLarge(Exception):
    """The result passed the byte budget while it arrived."""


class _Watchdog:
    """Bounds one query at a time from a thread, in time and in the harness's memory.

    Time: ``statement_timeout`` alone restarts with every statement, and code that never checks for
    interrupts (GEOS, some array functions) runs past it. When ``seconds`` have passed the watchdog
    sends a cancel request (a SIGINT to the backend, which PostGIS forwards to GEOS) and repeats it, in
    case one arrived between two statements. If the backend still has not answered ``grace`` seconds
    later, it shuts the connection's socket down: the query is abandoned (the harness moves on; the
    backend exits when it next talks to the client).

    Memory: libpq receives a row whole before any loader sees it, and PostgreSQL allows a row of up to
    1 GB. The watchdog samples the process's resident memory every few milliseconds; when it has grown by
    more than ``max_growth`` bytes since the query started, the socket is shut down the same way.

    One thread serves every query of an executor (``with watchdog.watch(conn, seconds) as query:``),
    and sleeps while none runs: a thread started and joined per query cost about 0.3 ms of the
    harness's time, 0.2 s of a main-job run whose golds are 500 queries. Leaving ``watch`` waits for
    whatever the thread is doing to that query (a cancel request, a shutdown), so nothing it does
    reaches the next query."""

    def __init__(self, *, grace: float = ABANDON_GRACE_S, max_growth: int = MAX_MEMORY_GROWTH) -> None:
        self._grace = grace
        self._max_growth = max_growth
        self._lock = threading.Condition()
        self._query: _WatchedQuery | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, conn: psycopg.Connection, seconds: float) -> Iterator[_WatchedQuery]:
        query = _WatchedQuery(conn, time.monotonic() + seconds, _resident_bytes())
        with self._lock:
            if self._closed:
                raise RuntimeError("internal error: the executor's watchdog is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="txt2sql-query-watchdog", daemon=True)
                self._thread.start()
            self._query = query
            self._lock.notify()
        try:
            yield query
        finally:
            with self._lock:  # waits while the thread acts on this query
                self._query = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _watch(self) -> None:
        while True:
            with self._lock:
                while self._query is None or self._query.done:
                    if self._closed:
                        return
                    self._lock.wait()
                if self._closed:
                    return
            time.sleep(_POLL_S)
            with self._lock:
                query = self._query
                if query is not None and not query.done:
                    self._check(query)

    def _check(self, query: _WatchedQuery) -> None:
        """One look at the running query (the lock held)."""
        if query.rss0 and _resident_bytes() - query.rss0 > self._max_growth:
            query.oversized = query.done = True
            _shut_down(query.conn)
            return
        now = time.monotonic()
        if now >= query.deadline and not query.fired:
            query.fired = True
            query.next_cancel, query.abandon_at = now, now + self._grace
        if now >= query.abandon_at:
            query.abandoned = query.done = True
            _shut_down(query.conn)
            return
        if now >= query.next_cancel:
            query.next_cancel = now + _CANCEL_REPEAT_S
            try:
                query.conn.cancel_safe(timeout=self._grace)
            except (psycopg.Error, OSError):
                pass


@dataclass
class _WatchedQuery:
    """What the watchdog knows of the query it watches, and what it did to it."""

    conn: psycopg.Connection
    deadline: float
    rss0: int
    fired: bool = False  # the wall-clock budget ran out: cancel requests were sent
    abandoned: bool = False  # still running ``grace`` seconds later: the socket was shut down
    oversized: bool = False  # the harness's memory grew too much: the socket was shut down
    done: bool = False  # abandoned or oversized: nothing more to do
    next_cancel: float = float("inf")
    abandon_at: float = float("inf")


def _resident_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where unavailable, which disables the check)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _shut_down(conn: psycopg.Connection) -> None:
    """Cut the connection's socket, from any thread: a blocked read returns at once with an error, and
    nothing more is received (used to abandon a query; the session is discarded afterwards)."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass


# The guard's decisions by (text, parsed by the caller?, function policy): shared by the executors of one
# scorer, since the same query runs on every data variant and the decision depends on nothing else.
Verdicts = dict[tuple[str, bool, FunctionPolicy], Classification]


class SafeExecutor:
    """Runs queries on one database as the reader role, each in a session of its own, so that nothing a
    query leaves behind (the random seed, settings, locks, prepared statements) reaches the next one.

    ``verdicts``: a dictionary shared with other executors (see ``Verdicts``), so that a query classified
    for one data variant is not tokenised and walked again for the next (about a third of the scoring's
    guard work on the main job, whose questions run on three variants).

    ``shared_session``: consecutive queries that finish ``ok`` share one session instead (each still in
    its own read-only transaction, rolled back); any other outcome ends it. Only for the benchmark's own
    gold SQL (see ``Scorer``): a fresh session costs a backend start and cold catalogue caches, about
    9 ms of server CPU a query against 0.5 ms on a shared one."""

    def __init__(self, info: ConnInfo, *, row_cap: int = DEFAULT_ROW_CAP,
                 statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS, byte_cap: int = DEFAULT_BYTE_CAP,
                 max_memory_growth: int = MAX_MEMORY_GROWTH, functions: FunctionPolicy | None = None,
                 shared_session: bool = False, verdicts: Verdicts | None = None) -> None:
        self.info = info
        self._verdicts = verdicts
        self.shared_session = shared_session
        self._kept: psycopg.Connection | None = None
        self.row_cap = row_cap
        self.byte_cap = byte_cap
        self.max_memory_growth = max_memory_growth
        self.statement_timeout_ms = statement_timeout_ms
        self._functions = functions
        self._type_names: dict[int, str] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="txt2sql-session")
        self._spare: concurrent.futures.Future[psycopg.Connection] | None = None
        self._watchdog = _Watchdog(max_growth=max_memory_growth)

    def close(self) -> None:
        """Close the spare (or the shared) session, if one is waiting."""
        kept, self._kept = self._kept, None
        if kept is not None:
            _discard(kept)
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                spare.result().close()
            except (ConnectionLost, psycopg.Error):
                pass
        self._pool.shutdown(wait=False)
        self._watchdog.close()

    def _session(self) -> psycopg.Connection:
        """A session no query has used: the spare opened (and PostGIS loaded) in the background while the
        previous query was scored, or a new one; then the next spare is started. With ``shared_session``:
        the session the last query left usable, else a new one (and no spare)."""
        kept, self._kept = self._kept, None
        if kept is not None and not (kept.closed or kept.broken):
            _BUDGETS[kept].refill()  # the byte budget is per query; the loaders hold this very object
            return kept
        spare, self._spare = self._spare, None
        conn = None
        if spare is not None:
            try:
                conn = spare.result()
            except (ConnectionLost, psycopg.Error):
                conn = None  # e.g. the server restarted meanwhile: connect now, and report that if it fails
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
        if not self.shared_session:
            self._spare = self._pool.submit(self._warm_session)
        return conn

    def _warm_session(self) -> psycopg.Connection:
        conn = self._connect()
        try:
            conn.execute("SELECT postgis_lib_version()")  # load PostGIS into the backend now, not later
        except psycopg.Error:
            pass
        conn.rollback()
        return conn

    def functions(self) -> FunctionPolicy:
        """The allow-list: given at construction (built at provisioning), or read once from the catalogue
        as the reader role."""
        if self._functions is None:
            with self._connect() as conn:
                self._functions = FunctionPolicy.from_catalogue(conn, self.info.user)
        return self._functions

    def _connect(self) -> psycopg.Connection:
        try:
            # the session starts read-only and with this executor's timeout: no round trip spent on SET
            options = f"-c default_transaction_read_only=on -c statement_timeout={int(self.statement_timeout_ms)}"
            conn = psycopg.connect(**self.info.kwargs(connect_timeout=5, options=options))
        except psycopg.OperationalError as exc:
            raise ConnectionLost(f"cannot connect to {self.info.describe()}: {exc}") from exc
        _install_loaders(conn, self.byte_cap)
        return conn

    def _type_name(self, conn: psycopg.Connection, oid: int) -> str:
        if oid not in self._type_names:
            info = conn.adapters.types.get(oid)
            if info is not None:
                self._type_names[oid] = info.name
            else:
                row = conn.execute("SELECT typname FROM pg_type WHERE oid = %s", (oid,)).fetchone()
                self._type_names[oid] = row[0] if row else str(oid)
        return self._type_names[oid]

    def run(self, sql: str, *, parsed: exp.Expr | None = None, budget_ms: float | None = None) -> Execution:
        """Classify, then execute. ``parsed``: the statement as sqlglot already parsed it from ``sql``.
        ``budget_ms``: what is left of the question's time (a prediction runs on every data variant, and the
        statement timeout bounds the question, not each variant); never more than the statement timeout."""
        verdict = self._classify(sql, parsed)
        if not verdict.allowed:
            return Execution("refused", error=verdict.reason)
        limit_ms = self.statement_timeout_ms if budget_ms is None else min(self.statement_timeout_ms, budget_ms)
        if limit_ms <= 0:
            return Execution("timeout", sqlstate="57014", error=f"the question's time budget of "
                                                                f"{self.statement_timeout_ms} ms is spent")
        conn = self._session()
        t0 = time.monotonic()
        outcome: Execution | None = None
        watchdog: _WatchedQuery | None = None
        try:
            with self._watchdog.watch(conn, limit_ms / 1000) as watchdog:
                outcome = self._outcome(conn, sql, t0, watchdog)
                return outcome
        except psycopg.Error as exc:
            if watchdog is None:
                raise
            if watchdog.oversized:
                return Execution("exec_error", seconds=time.monotonic() - t0,
                                 error=f"the result is too large: the harness's memory grew by more than "
                                       f"{self.max_memory_growth / 2**20:g} MiB while receiving it; abandoned")
            if watchdog.abandoned:
                return Execution("timeout", sqlstate="57014", seconds=time.monotonic() - t0,
                                 error=f"abandoned: still running {ABANDON_GRACE_S:g} s after being cancelled at the "
                                       f"wall-clock budget of {self.statement_timeout_ms} ms")
            if conn.broken or conn.closed or (exc.sqlstate or "").startswith(_CONNECTION_SQLSTATE_CLASSES):
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
            raise
        finally:
            self._release(conn, kept=outcome is not None and outcome.status == "ok" and watchdog is not None
                          and not watchdog.fired)

    def _classify(self, sql: str, parsed: exp.Expr | None) -> Classification:
        functions = self.functions()
        if self._verdicts is None:
            return classify(sql, parsed=parsed, functions=functions)
        key = (sql, parsed is not None, functions)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = classify(sql, parsed=parsed, functions=functions)
        return verdict

    def _release(self, conn: psycopg.Connection, *, kept: bool) -> None:
        """Roll back; keep the session for the next query when it is shared and the query ended ``ok``,
        else close it."""
        if self.shared_session and kept and not (conn.broken or conn.closed):
            try:
                conn.rollback()
                self._kept = conn
                return
            except psycopg.Error:
                pass
        _discard(conn)

    def _outcome(self, conn: psycopg.Connection, sql: str, t0: float, watchdog: _WatchedQuery) -> Execution:
        """The query's own failures become statuses; a broken connection propagates."""
        def failed(status: ExecStatus, error: str, sqlstate: str | None = None) -> Execution:
            return Execution(status, sqlstate=sqlstate, seconds=time.monotonic() - t0, error=error)
        try:
            result = self._fetch(conn, sql, watchdog)
        except UnicodeEncodeError as exc:
            # raised client-side before anything is sent, e.g. a lone surrogate (JSON "\ud800") in a
            # prediction: the query's fault, not the harness's
            return failed("exec_error", f"the query is not valid Unicode ({exc.reason} at position {exc.start})")
        except ResultTooLarge as exc:
            return failed("exec_error", str(exc))
        except RecursionError:
            return failed("exec_error", "a value in the result is nested too deeply to load")
        except psycopg.errors.QueryCanceled as exc:
            return failed("timeout", self._timeout_message(watchdog), exc.sqlstate)
        except psycopg.Error as exc:
            if conn.broken or (exc.sqlstate or "").startswith(_CONNECTION_SQLSTATE_CLASSES):
                raise
            return failed("exec_error", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                          exc.sqlstate)
        if result is None:
            return failed("timeout", self._timeout_message(watchdog), "57014")
        return Execution("ok", result, seconds=time.monotonic() - t0)

    def _timeout_message(self, watchdog: _WatchedQuery) -> str:
        if watchdog.fired:
            return f"cancelled after the wall-clock budget of {self.statement_timeout_ms} ms"
        return f"cancelled after statement_timeout={self.statement_timeout_ms} ms"

    def _fetch(self, conn: psycopg.Connection, sql: str, watchdog: _WatchedQuery) -> ResultSet | None:
        """Stream the rows (libpq chunked-rows mode: one chunk in memory at a time) up to the row cap and
        the byte budget; None when the wall-clock budget ran out first."""
        cur = conn.cursor()  # the connection is not in autocommit: the statement runs inside BEGIN
        rows: list[tuple[Any, ...]] = []
        capped = False
        stream = cur.stream(sql.strip().rstrip(";"), size=_CHUNK)  # type: ignore[arg-type]
        try:
            for row in stream:
                if len(rows) >= self.row_cap or watchdog.fired:
                    capped = not watchdog.fired
                    break
                rows.append(row)
        except (ResultTooLarge, RecursionError):
            _shut_down(conn)  # do not receive (and drain) the rest of a result that is refused anyway
            raise
        finally:
            stream.close()  # type: ignore[attr-defined]  # a generator: cancels and drains the rest
        if watchdog.fired:
            return None
        columns, types = self._describe(conn, cur, sql)
        return ResultSet(columns, types, tuple(_typed_rows(rows, types)), capped)

    def _describe(self, conn: psycopg.Connection, cur: psycopg.Cursor[Any],
                  sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Column names and types. A stream that yielded no row carries no description, so the statement
        is then prepared (parsed and analysed, not run) and described."""
        if cur.description is not None and cur.pgresult is not None:
            desc = [(d.name, d.type_code) for d in cur.description]
        else:
            pgconn = conn.pgconn
            res = pgconn.prepare(b"", sql.strip().rstrip(";").encode(conn.info.encoding))
            if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                sqlstate = (res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"XX000").decode()
                raise psycopg.errors.lookup(sqlstate)(res.error_message.decode(errors="replace"))
            res = pgconn.describe_prepared(b"")
            enc = conn.info.encoding
            desc = [((res.fname(i) or b"").decode(enc), res.ftype(i)) for i in range(res.nfields)]
        return tuple(n for n, _ in desc), tuple(self._type_name(conn, oid) for _, oid in desc)


class _Budget:
    """What is left of one query's byte budget; spent by the loaders, value by value, before a value is
    turned into a Python object."""

    def __init__(self, nbytes: int) -> None:
        self.limit = nbytes
        self.left = nbytes

    def refill(self) -> None:
        self.left = self.limit

    def spend(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise ResultTooLarge(f"the result is larger than the byte budget ({self.limit / 2**20:g} MiB as "
                                 "sent by the server); it is not loaded")


_BUDGETS: weakref.WeakKeyDictionary[Any, _Budget] = weakref.WeakKeyDictionary()
_GUARDED: dict[tuple[type[Any], int], type[Loader]] = {}
# Parsing an array's text costs far more per byte than copying a string (psycopg: about 0.6 us per
# element): an array's bytes count this many times, so the budget bounds the time to load as well.
ARRAY_WEIGHT = 16


def _guarded(inner: type[Any], weight: int = 1) -> type[Loader]:
    """A loader that charges each value's size (times ``weight``) to its connection's budget, then loads
    it with ``inner``."""
    if (inner, weight) not in _GUARDED:
        def __init__(self: Any, oid: int, context: Any = None) -> None:
            Loader.__init__(self, oid, context)
            self._inner = inner(oid, context)
            self._budget = _BUDGETS.get(self.connection)

        def load(self: Any, data: Any) -> Any:
            if self._budget is not None:
                self._budget.spend((len(data) + 4) * weight)  # + its length word on the wire
            return self._inner.load(data)

        _GUARDED[inner, weight] = type(f"Budgeted{inner.__name__}", (Loader,), {"__init__": __init__, "load": load})
    return _GUARDED[inner, weight]


def _install_loaders(conn: psycopg.Connection, byte_cap: int) -> None:
    """JSON loads as its text (JSON null stays apart from SQL NULL, and no depth crashes a fetch); every
    text-format loader, and the fallback for unknown types such as geometry, spends the byte budget."""
    for json_type in ("json", "jsonb"):
        conn.adapters.register_loader(json_type, TextLoader)
    arrays = {t.array_oid for t in conn.adapters.types if t.array_oid}
    for oid in {0} | arrays | {t.oid for t in conn.adapters.types}:
        inner = conn.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
        if inner is not None:
            conn.adapters.register_loader(oid, _guarded(inner, ARRAY_WEIGHT if oid in arrays else 1))
    _BUDGETS[conn] = _Budget(byte_cap)


def _discard(conn: psycopg.Connection) -> None:
    """Roll back (nothing is ever committed) and end the session."""
    try:
        if not conn.broken:
            conn.rollback()
    except psycopg.Error:
        pass
    finally:
        conn.close()


def _typed_rows(rows: list[tuple[Any, ...]], types: tuple[str, ...]) -> list[tuple[Any, ...]]:
    geo = [i for i, t in enumerate(types) if t in SPATIAL_TYPES]
    if not geo:
        return rows
    return [tuple(GeoValue(v, types[i]) if i in geo and v is not None else v for i, v in enumerate(r)) for r in rows]
