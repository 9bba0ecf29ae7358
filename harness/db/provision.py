"""``--db auto|local|docker|postgresql://...`` -> a running server."""

from __future__ import annotations

import os

from harness.db.docker import DockerServer, docker_engine_error
from harness.db.external import ExternalServer
from harness.db.local import LocalCluster
from harness.db.server import Server
from harness.errors import ProvisionError


def provision(spec: str = "auto") -> Server:
    """Create (not yet started) the server for ``spec``; use it as a context manager."""
    if spec.startswith(("postgresql://", "postgres://")) or "=" in spec:
        return ExternalServer(spec)
    if spec == "local":
        return LocalCluster()
    if spec == "docker":
        return DockerServer()
    if spec != "auto":
        raise ProvisionError(f"--db {spec!r}: expected one of auto, local, docker, or a postgresql:// DSN")
    tried: list[str] = []
    dsn = os.environ.get("TXT2SQL_DB")
    if dsn:
        return ExternalServer(dsn)
    tried.append("TXT2SQL_DB: not set (set it to a postgresql:// DSN to use an existing server)")
    why = docker_engine_error()
    if why is None:
        return DockerServer()
    tried.append(f"docker: {why} (start Docker to use the postgis/postgis image)")
    try:
        return LocalCluster()
    except ProvisionError as exc:
        tried.append(f"local: {exc}")
    raise ProvisionError("no PostgreSQL + PostGIS could be provisioned. Tried:\n  - " + "\n  - ".join(tried))
