"""What every provisioner hands out: a running PostgreSQL server with PostGIS and an admin
connection. Provisioners are context managers: configure -> start -> wait until ready -> stop."""

from __future__ import annotations

import abc
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as pgsql

from harness.errors import ProvisionError


@dataclass(frozen=True)
class ConnInfo:
    """Keyword arguments for psycopg.connect. ``host`` may be a unix-socket directory."""

    host: str
    port: int
    user: str
    dbname: str = "postgres"
    password: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    def kwargs(self, **override: Any) -> dict[str, Any]:
        kw: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname}
        if self.password:
            kw["password"] = self.password
        kw.update(self.options)
        kw.update(override)
        return kw

    def with_(self, **changes: Any) -> ConnInfo:
        data: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                                "password": self.password, "options": self.options}
        data.update(changes)
        return ConnInfo(**data)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


class Server(abc.ABC):
    """A PostgreSQL server with PostGIS, as a context manager: ``with server: ... server.admin ...``.

    The local cluster, the container and the DSN server differ in how they start, stop and show logs;
    the lifecycle around those steps (enter/exit, liveness, waiting until ready) is this one.
    """

    kind: str = ""
    # stop() removes the whole server with everything in it (a throwaway cluster, the run's container):
    # the run's databases need not be dropped first
    disposable: bool = False

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:  # Ctrl-C or a failure half-way through start: leave nothing behind
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @abc.abstractmethod
    def start(self) -> None:
        """Configure and start the server, and return once it accepts connections."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and remove whatever start() created; idempotent, safe after a failed start."""

    @property
    @abc.abstractmethod
    def admin(self) -> ConnInfo:
        """A role that may create databases and roles."""

    @abc.abstractmethod
    def logs(self) -> str:
        """The server's recent log, for error messages."""

    def is_alive(self) -> bool:
        return server_answers(self.admin)

    def recover(self) -> bool:
        """Try to bring a dead server back (restart). True if it answers again."""
        return self.is_alive()

    def wait_ready(self, timeout: float, where: str) -> None:
        """Poll until the server answers; else a ProvisionError with its log."""
        deadline = time.monotonic() + timeout
        while not self.is_alive():
            if time.monotonic() > deadline:
                raise ProvisionError(f"{where} did not accept connections within {timeout:.0f}s.\n"
                                     f"Server log:\n{self.logs()}")
            time.sleep(0.1)


def exit_on_sigterm() -> None:
    """SIGTERM would otherwise skip ``atexit`` and ``finally``: make it a normal exit (status 143)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        try:
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        except ValueError:  # not the main thread
            pass


@contextlib.contextmanager
def admin_connection(info: ConnInfo, dbname: str | None = None, timeout: float = 10) -> Iterator[psycopg.Connection]:
    """Autocommit admin connection (CREATE DATABASE cannot run inside a transaction). Text comes back as
    UTF8 even from a SQL_ASCII database, where psycopg would otherwise hand out bytes."""
    kw = info.kwargs(connect_timeout=max(1, int(timeout)), client_encoding="UTF8")
    if dbname:
        kw["dbname"] = dbname
    with psycopg.connect(**kw, autocommit=True) as conn:
        yield conn


def server_answers(info: ConnInfo, timeout: int = 2) -> bool:
    """True when the server accepts a connection and runs ``SELECT 1``."""
    try:
        with psycopg.connect(**info.kwargs(connect_timeout=timeout), autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def template1_encoding(conn: psycopg.Connection) -> str:
    """template1's encoding; text, even over a SQL_ASCII database's connection (where psycopg returns bytes)."""
    row = conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template1'").fetchone()
    value = row[0] if row else "?"
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def create_utf8_database(conn: psycopg.Connection, name: str) -> None:
    """``CREATE DATABASE name``, UTF8 whatever the server's default (a server initialised as
    SQL_ASCII cannot hold the benchmarks' Chinese text). template1 is kept when it is UTF8, so that
    PostGIS installed there by a superuser is inherited; otherwise template0 with the C locale,
    which is compatible with every encoding."""
    if template1_encoding(conn) == "UTF8":
        conn.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE template1 ENCODING 'UTF8'").format(pgsql.Identifier(name)))
    else:
        conn.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
                     .format(pgsql.Identifier(name)))


def ensure_postgis(conn: psycopg.Connection, admin: ConnInfo) -> None:
    """PostGIS in the connected database: inherited from its template, else created; else one error
    that names what is missing on the server and how to grant it."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone():
        return
    try:
        conn.execute("CREATE EXTENSION postgis")
    except psycopg.errors.InsufficientPrivilege as exc:
        encoding = template1_encoding(conn)
        why = ("template1 has no PostGIS to inherit" if encoding == "UTF8" else
               f"template1 is {encoding}, not UTF8, so the harness's UTF8 databases are made from template0, "
               "which has no PostGIS")
        raise ProvisionError(
            f"PostGIS is not available to role '{admin.user}' on {admin.host}:{admin.port}: the role may not "
            f"create the extension (postgis is not a trusted extension: only a superuser may create it) and "
            f"{why}. Fix one of: as a superuser, run `CREATE EXTENSION postgis;` in template1 (on a UTF8 "
            f"template1: `psql -d template1 -c 'CREATE EXTENSION postgis'`); or connect as a superuser; or "
            "use --db local / --db docker.") from exc
    except psycopg.Error as exc:  # 58P01 / 0A000: the extension is not installed on the server at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProvisionError(
            f"PostGIS is not installed on the server {admin.host}:{admin.port} ({first}). Install it there "
            "(Debian: `apt-get install postgresql-15-postgis-3`, for the server's major version), or use "
            "--db local / --db docker.") from exc
