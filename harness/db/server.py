"""What every provisioner hands out: a running PostgreSQL server with PostGIS and a superuser
connection. Provisioners are context managers: configure -> start -> wait until ready -> stop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg


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


class Server(Protocol):
    """A running server. ``admin`` is a role that may create databases and roles."""

    kind: str

    def __enter__(self) -> Server: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def admin(self) -> ConnInfo: ...

    def is_alive(self) -> bool: ...

    def recover(self) -> bool:
        """Try to bring a dead server back (restart). True if it answers again."""
        ...

    def logs(self) -> str: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def admin_connection(info: ConnInfo, dbname: str | None = None, timeout: float = 10) -> Iterator[psycopg.Connection]:
    """Autocommit superuser connection (CREATE DATABASE cannot run inside a transaction)."""
    kw = info.kwargs(connect_timeout=max(1, int(timeout)))
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
