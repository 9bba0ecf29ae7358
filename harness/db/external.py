"""An existing server given by DSN. The harness only ever creates and drops its own scratch
databases and role there (all named ``txt2sql_<run id>_...``); it never touches others."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from harness.db.server import ConnInfo, Server
from harness.errors import ProvisionError


class ExternalServer(Server):
    """A server the user runs. Its role needs CREATEDB and CREATEROLE, and PostGIS must be available
    in the databases it creates: inherited from template1, or created (which needs a superuser,
    postgis not being a trusted extension)."""

    kind = "dsn"

    def __init__(self, dsn: str) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ProvisionError(f"--db {dsn!r} is not a valid PostgreSQL DSN ({exc}). "
                                 "Example: postgresql://user:pass@localhost:5432/postgres") from exc
        self._dsn_redacted = dsn.split("@")[-1] if "@" in dsn else dsn
        password = params.get("password")
        self._info = ConnInfo(host=str(params.get("host") or "localhost"), port=int(params.get("port") or 5432),
                              user=str(params.get("user") or "postgres"), dbname=str(params.get("dbname") or "postgres"),
                              password=None if password is None else str(password))

    def start(self) -> None:
        try:
            with psycopg.connect(**self._info.kwargs(connect_timeout=5), autocommit=True) as conn:
                row = conn.execute("SELECT rolcreatedb OR rolsuper, rolcreaterole OR rolsuper FROM pg_roles "
                                   "WHERE rolname = current_user").fetchone()
        except psycopg.OperationalError as exc:
            raise ProvisionError(f"cannot connect to {self._dsn_redacted}: {' '.join(str(exc).split())} "
                                 "Check host, port and credentials, or use --db local.") from exc
        if not row or not row[0] or not row[1]:
            raise ProvisionError(f"role '{self._info.user}' on {self._dsn_redacted} needs CREATEDB and CREATEROLE "
                                 "(the harness creates scratch databases and a read-only role, and drops them).")

    @property
    def admin(self) -> ConnInfo:
        return self._info

    def logs(self) -> str:
        return "(external server: see its own logs)"

    def stop(self) -> None:
        pass
