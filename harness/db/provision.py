"""``--db auto|local|docker|postgresql://...`` -> a running server."""

from __future__ import annotations

import os

from harness.db.docker import DockerServer, docker_engine_error
from harness.db.external import ExternalServer
from harness.db.local import LocalCluster
from harness.db.server import Server
from harness.errors import ProvisionError


def provision(spec: str = "auto", *, docker_image: str | None = None) -> Server:
    """Create (not yet started) the server for ``spec``; use it as a context manager.

    ``docker_image`` is ``--docker-image`` (default: ``TXT2SQL_DOCKER_IMAGE``, else the official
    PostGIS image, else the locally built one)."""
    if spec.startswith(("postgresql://", "postgres://")) or "=" in spec:
        return ExternalServer(spec)
    if spec == "local":
        return LocalCluster()
    if spec == "docker":
        return DockerServer(docker_image)
    if spec != "auto":
        raise ProvisionError(f"--db {spec!r}: expected one of auto, local, docker, or a postgresql:// DSN")
    tried: list[str] = []
    dsn = os.environ.get("TXT2SQL_DB")
    if dsn:
        return ExternalServer(dsn)
    tried.append("TXT2SQL_DB: not set (set it to a postgresql:// DSN to use an existing server)")
    why = docker_engine_error()
    if why is None:
        return DockerServer(docker_image)
    tried.append(f"docker: {why} (start Docker, or podman: `eval \"$(bash scripts/container-engine.sh)\"`)")
    try:
        return LocalCluster()
    except ProvisionError as exc:
        tried.append(f"local: {exc}")
    raise ProvisionError("no PostgreSQL + PostGIS could be provisioned. Tried:\n  - " + "\n  - ".join(tried))
