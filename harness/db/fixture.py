"""Benchmark databases on a server: each (database, data variant) is one database (schema + data), with a
dedicated read-only role that can only SELECT. The schema (and PostGIS) is built once per database, with
the catalogue's statistics, and copied into each variant (``CREATE DATABASE ... TEMPLATE``): ``CREATE
EXTENSION postgis`` alone takes a quarter of a second. A variant then loads its data and analyses its own
tables only (the catalogue and PostGIS's tables are as the copy brought them: about 60 ms a variant).

All objects the harness creates are named ``txt2sql_<run id>_...`` and dropped at the end, so on a
shared server (``--db postgresql://...``) nothing else is touched.
"""

from __future__ import annotations

import gzip
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql as pgsql

from harness.benchmark.model import Benchmark, DatabaseSpec, DataVariant
from harness.db.guard import SAFE_ROUTINE, FunctionPolicy, catalogue_parameters
from harness.db.server import ConnInfo, Server, admin_connection, create_utf8_database, ensure_postgis
from harness.errors import BenchmarkError, InfrastructureError

log = logging.getLogger(__name__)
# Role defaults (ALTER ROLE ... SET): they survive DISCARD ALL / RESET, and every query runs in a fresh
# session that starts from them. temp_file_limit is superuser-only to set; on a DSN whose role is not a
# superuser it is skipped with a warning.
ROLE_LIMITS = {"default_transaction_read_only": "on", "idle_in_transaction_session_timeout": "60s",
               "work_mem": "8MB", "temp_file_limit": "64MB", "lock_timeout": "2s",
               "standard_conforming_strings": "on"}
_CHECKSUMS_PER_QUERY = 500  # result columns of one checksum statement (PostgreSQL allows 1664)


@dataclass(frozen=True)
class VariantDatabase:
    """One usable database: (db, variant), copied from ``template`` (the schema database) and loaded."""

    db: str
    variant: str
    dbname: str
    template: str


def _ident(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())[:20]


def _read_sql(path: Path) -> str:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return fh.read()
    return path.read_text(encoding="utf-8")


class FixtureDatabases:
    """``with FixtureDatabases(server, benchmark) as fx: fx.reader(db, variant)``."""

    def __init__(self, server: Server, benchmark: Benchmark, *, statement_timeout_ms: int = 10_000) -> None:
        self.server = server
        self.benchmark = benchmark
        self.statement_timeout_ms = statement_timeout_ms
        self.run_id = secrets.token_hex(4)
        self.prefix = f"txt2sql_{self.run_id}"
        self.reader_role = f"{self.prefix}_reader"
        self._reader_password = secrets.token_urlsafe(16)
        self.databases: dict[tuple[str, str], VariantDatabase] = {}
        self._functions: dict[str, FunctionPolicy] = {}

    def __enter__(self) -> FixtureDatabases:
        try:
            self.build()
        except BaseException:
            self.drop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()

    # -- build -----------------------------------------------------------------------------------
    def build(self) -> None:
        admin = self.server.admin
        with admin_connection(admin) as conn:
            conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                   "NOINHERIT NOREPLICATION CONNECTION LIMIT 20").format(
                pgsql.Identifier(self.reader_role), pgsql.Literal(self._reader_password)))
            settings = dict(ROLE_LIMITS, statement_timeout=str(self.statement_timeout_ms))
            for name, value in settings.items():
                try:
                    conn.execute(pgsql.SQL("ALTER ROLE {} SET {} = {}").format(
                        pgsql.Identifier(self.reader_role), pgsql.Identifier(name), pgsql.Literal(value)))
                except psycopg.errors.InsufficientPrivilege as exc:
                    log.warning("cannot set %s for the reader role (%s); that limit is not enforced", name, exc)
        for index, spec in enumerate(self.benchmark.databases.values()):
            # one "_" after the prefix: no variant's name (prefix_db_variant) can be this one
            schema_db = f"{self.prefix}_schema{index}"
            self._build_schema(admin, spec, schema_db)
            for variant in spec.variants:
                name = f"{self.prefix}_{_ident(spec.name)}_{_ident(variant.name)}"
                self._build_variant(admin, variant, name, schema_db)
                self.databases[(spec.name, variant.name)] = VariantDatabase(spec.name, variant.name, name, schema_db)

    def _build_schema(self, admin: ConnInfo, spec: DatabaseSpec, name: str) -> None:
        """A UTF8 database with PostGIS and the benchmark's schema: what every variant starts from. Its
        statistics (the catalogue's, PostGIS's tables') are copied with it, so a variant analyses only
        the tables it loads."""
        with admin_connection(admin) as conn:
            create_utf8_database(conn, name)
        with admin_connection(admin, dbname=name, timeout=30) as conn:
            ensure_postgis(conn, admin)
            self._load(conn, spec.schema_path, spec.schema_sql)
            conn.execute("ANALYZE")

    def _build_variant(self, admin: ConnInfo, variant: DataVariant, name: str, schema_db: str) -> None:
        """The schema database copied, the variant's data loaded, the reader's grants; the database is used
        as it is (no further copy: nothing the reader role runs can change it, and the checksums taken
        before and after the run would show it)."""
        with admin_connection(admin) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                pgsql.Identifier(name), pgsql.Identifier(schema_db)))
        with admin_connection(admin, dbname=name, timeout=30) as conn:
            if variant.path is not None:
                self._load(conn, variant.path, _read_sql(variant.path))
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            schemas = [r[0] for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema'").fetchall()]
            for schema in schemas:
                conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                    pgsql.Identifier(schema), pgsql.Identifier(self.reader_role)))
                conn.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                    pgsql.Identifier(schema), pgsql.Identifier(self.reader_role)))
            policy = self._restrict_functions(conn)
            # variants with the same catalogue share one policy object: the scorer's guard decisions are
            # keyed by it, and an identical key is found without comparing two sets of ~3,000 names
            self._functions[name] = next((p for p in self._functions.values() if p == policy), policy)
            self._analyse_own_tables(conn)
            conn.execute(pgsql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(pgsql.Identifier(name)))
            conn.execute(pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                pgsql.Identifier(name), pgsql.Identifier(self.reader_role)))

    @staticmethod
    def _analyse_own_tables(conn: psycopg.Connection) -> None:
        """``ANALYZE`` the tables of the benchmark's schemas, not those of an extension (PostGIS's
        spatial_ref_sys: analysed in the schema database, like the catalogue): a whole-database
        ``ANALYZE`` took 90 ms a variant, these 35 ms."""
        tables = conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT LIKE 'pg\\_%' "
            "AND n.nspname <> 'information_schema' AND NOT EXISTS (SELECT 1 FROM pg_depend d "
            "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') "
            "ORDER BY 1").fetchall()
        if tables:
            conn.execute("ANALYZE " + ", ".join(t[0] for t in tables))

    def _restrict_functions(self, conn: psycopg.Connection) -> FunctionPolicy:
        """The guard's allow-list for this database, from its catalogue; then revoke EXECUTE from PUBLIC on
        every other routine, so that the role refuses what the guard refuses.

        pg_proc is per database and this is the run's own database, so the revoke touches no other database
        on the server. PostgreSQL has no per-role deny (every role
        holds PUBLIC's grants), which is why it is done here. Only the owner of a routine (or a superuser)
        can revoke: on a DSN whose role is neither, catalogue functions keep PUBLIC's grant and the guard
        alone refuses them (logged)."""
        policy = FunctionPolicy.from_catalogue(conn, self.reader_role)
        unsafe = f"NOT {SAFE_ROUTINE} OR NOT (p.proname = ANY(%(allowed)s))"
        params = {**catalogue_parameters(), "allowed": sorted(policy.allowed)}
        refused = [r[0] for r in conn.execute(
            f"SELECT p.oid::regprocedure::text FROM pg_proc p WHERE ({unsafe}) "
            "AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1", params).fetchall()]
        for i in range(0, len(refused), 200):
            try:
                conn.execute("REVOKE EXECUTE ON ROUTINE " + ", ".join(refused[i:i + 200]) + " FROM PUBLIC")
            except psycopg.Error as exc:
                log.warning("cannot revoke EXECUTE on refused functions (%s)", exc)
                break
        left = conn.execute(f"SELECT count(*) FROM pg_proc p WHERE ({unsafe}) "
                            "AND has_function_privilege(%(role)s, p.oid, 'EXECUTE')",
                            {**params, "role": self.reader_role}).fetchone()
        if left and left[0]:
            log.warning("the reader role may still execute %d functions the guard refuses (the admin role does "
                        "not own them); the guard alone refuses them", left[0])
        return policy

    @staticmethod
    def _load(conn: psycopg.Connection, path: Path, text: str) -> None:
        try:
            conn.execute(text)  # type: ignore[arg-type]  # a whole DDL/data script: simple query protocol
        except psycopg.Error as exc:
            diag = exc.diag
            pos = diag.statement_position
            line = text.count("\n", 0, int(pos) - 1) + 1 if pos and pos.isdigit() else None
            raise BenchmarkError(path, f"failed to load into PostgreSQL: {str(exc).strip().splitlines()[0]}"
                                       + (f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else ""),
                                 line=line) from exc

    # -- use -------------------------------------------------------------------------------------
    def variants(self, db: str) -> list[VariantDatabase]:
        return [v for (d, _), v in self.databases.items() if d == db]

    def functions(self, vdb: VariantDatabase) -> FunctionPolicy:
        """What the reader role may call in ``vdb`` (built once per database at provisioning)."""
        return self._functions[vdb.dbname]

    def reader(self, vdb: VariantDatabase) -> ConnInfo:
        return self.server.admin.with_(user=self.reader_role, password=self._reader_password, dbname=vdb.dbname)

    def checksums(self) -> dict[str, str]:
        """Per clone and table: row count and an order-independent md5 of the rows; plus the list of
        relations, roles and large objects, so a created object shows up too. Two queries per database
        (its relations, then every table's sum in one statement, up to ``_CHECKSUMS_PER_QUERY``): each
        round trip waits for the interpreter lock, which the model load holds meanwhile."""
        out: dict[str, str] = {}
        for vdb in self.databases.values():
            try:
                with admin_connection(self.server.admin, dbname=vdb.dbname) as conn:
                    rels = conn.execute(
                        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
                        "AND c.relkind IN ('r', 'p', 'm', 'v', 'f', 'S') ORDER BY 1, 2").fetchall()
                    out[f"{vdb.dbname}:relations"] = ",".join(f"{s}.{r}:{k}" for s, r, k in rels)
                    names = [f"{vdb.dbname}:{s}.{r}" for s, r, k in rels if k in ("r", "p", "m")]
                    sums: list[pgsql.Composable] = [pgsql.SQL(
                        "(SELECT count(*) || ':' || md5(coalesce(string_agg(h, '' ORDER BY h), '')) "
                        "FROM (SELECT md5(t::text) AS h FROM {}.{} t) s)").format(
                        pgsql.Identifier(s), pgsql.Identifier(r)) for s, r, k in rels if k in ("r", "p", "m")]
                    names.append(f"{vdb.dbname}:large_objects")
                    sums.append(pgsql.SQL("(SELECT count(*)::text FROM pg_largeobject_metadata)"))
                    if "roles" not in out:  # pg_roles is shared by every database of the server: read once
                        names.append("roles")
                        sums.append(pgsql.SQL("(SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') "
                                              "FROM pg_roles)"))
                    for i in range(0, len(sums), _CHECKSUMS_PER_QUERY):
                        row = conn.execute(pgsql.SQL("SELECT ") + pgsql.SQL(", ").join(
                            sums[i:i + _CHECKSUMS_PER_QUERY])).fetchone()
                        out.update(zip(names[i:i + _CHECKSUMS_PER_QUERY], row or (), strict=True))
            except psycopg.OperationalError as exc:
                raise InfrastructureError(f"cannot checksum {vdb.dbname}: {exc}") from exc
        return out

    def drop(self) -> None:
        """Drop everything this run created; best effort (the server may already be gone)."""
        try:
            with admin_connection(self.server.admin, timeout=5) as conn:
                names = [r[0] for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (self.prefix + "\\_%",)).fetchall()]
                for name in names:
                    conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
                conn.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(self.reader_role)))
        except psycopg.Error:
            pass

