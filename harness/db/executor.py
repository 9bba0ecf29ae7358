"""Safe execution of one query: classified first, then run as the read-only role through a named
server-side cursor (one statement, bounded rows), under ``statement_timeout``, always rolled back.

Outcomes are keyed by SQLSTATE, never by message text.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql as pgsql

from harness.db.guard import classify
from harness.db.server import ConnInfo

ExecStatus = Literal["ok", "exec_error", "timeout", "refused"]
DEFAULT_ROW_CAP = 100_000
DEFAULT_STATEMENT_TIMEOUT_MS = 10_000
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


class SafeExecutor:
    """One reader connection to one database, reused across queries."""

    def __init__(self, info: ConnInfo, *, row_cap: int = DEFAULT_ROW_CAP,
                 statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS, fetch_size: int = 5000) -> None:
        self.info = info
        self.row_cap = row_cap
        self.statement_timeout_ms = statement_timeout_ms
        self.fetch_size = fetch_size
        self._conn: psycopg.Connection | None = None
        self._type_names: dict[int, str] = {}
        self._counter = itertools.count()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(**self.info.kwargs(connect_timeout=5), autocommit=True)
            except psycopg.OperationalError as exc:
                raise ConnectionLost(f"cannot connect to {self.info.describe()}: {exc}") from exc
            self._type_names = {}
        return self._conn

    def _type_name(self, conn: psycopg.Connection, oid: int) -> str:
        if oid not in self._type_names:
            info = conn.adapters.types.get(oid)
            if info is not None:
                self._type_names[oid] = info.name
            else:
                with conn.transaction():
                    row = conn.execute("SELECT typname FROM pg_type WHERE oid = %s", (oid,)).fetchone()
                self._type_names[oid] = row[0] if row else str(oid)
        return self._type_names[oid]

    def run(self, sql: str) -> Execution:
        verdict = classify(sql)
        if not verdict.allowed:
            return Execution("refused", error=verdict.reason)
        conn = self._connection()
        t0 = time.monotonic()
        try:
            return self._run(conn, sql, t0)
        except psycopg.Error as exc:
            if conn.broken or conn.closed or (exc.sqlstate or "").startswith(_CONNECTION_SQLSTATE_CLASSES):
                self.close()
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc
            raise
        finally:
            self._reset(conn)

    def _run(self, conn: psycopg.Connection, sql: str, t0: float) -> Execution:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(pgsql.SQL("SET LOCAL statement_timeout = {}").format(
                    pgsql.Literal(str(self.statement_timeout_ms))))
                with conn.cursor(name=f"txt2sql_q{next(self._counter)}") as cur:
                    cur.itersize = self.fetch_size
                    cur.execute(sql.strip().rstrip(";"))  # type: ignore[arg-type]
                    desc = cur.description or []
                    rows: list[tuple[Any, ...]] = []
                    while len(rows) <= self.row_cap:
                        chunk = cur.fetchmany(min(self.fetch_size, self.row_cap + 1 - len(rows)))
                        if not chunk:
                            break
                        rows.extend(chunk)
                    capped = len(rows) > self.row_cap
                    rows = rows[: self.row_cap]
                    types = tuple(self._type_name(conn, d.type_code) for d in desc)
                raise psycopg.Rollback()  # never commit anything
        except UnicodeEncodeError as exc:
            # raised client-side before anything is sent, e.g. a lone surrogate (JSON "\ud800") in a
            # prediction: the query's fault, not the harness's
            return Execution("exec_error", seconds=time.monotonic() - t0,
                             error=f"the query is not valid Unicode ({exc.reason} at position {exc.start})")
        except psycopg.errors.QueryCanceled as exc:
            if exc.sqlstate == "57014":
                return Execution("timeout", sqlstate=exc.sqlstate, seconds=time.monotonic() - t0,
                                 error=f"cancelled after statement_timeout={self.statement_timeout_ms} ms")
            raise
        except psycopg.Error as exc:
            if conn.broken or (exc.sqlstate or "").startswith(_CONNECTION_SQLSTATE_CLASSES):
                raise
            return Execution("exec_error", sqlstate=exc.sqlstate, seconds=time.monotonic() - t0,
                             error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        seconds = time.monotonic() - t0
        geo = [i for i, t in enumerate(types) if t in SPATIAL_TYPES]
        if geo:
            rows = [tuple(GeoValue(v, types[i]) if i in geo and v is not None else v for i, v in enumerate(r))
                    for r in rows]
        return Execution("ok", ResultSet(tuple(d.name for d in desc), types, tuple(rows), capped), seconds=seconds)

    def _reset(self, conn: psycopg.Connection) -> None:
        """Undo whatever a query left on the session (advisory locks, settings, prepared plans)."""
        if conn.closed or conn.broken:
            return
        try:
            conn.execute("DISCARD ALL")
        except psycopg.Error:
            self.close()
