"""PostGIS in a container (testcontainers), for workstations that run Docker."""

from __future__ import annotations

import time
from typing import Any

from harness.db.server import ConnInfo, server_answers
from harness.errors import ProvisionError

DEFAULT_IMAGE = "postgis/postgis:15-3.4"


def docker_engine_error() -> str | None:
    """None if a Docker engine answers; else why not. Takes milliseconds when there is no engine."""
    try:
        import docker  # testcontainers' own client library
    except ImportError:
        return "the `docker` Python package is missing (pip install 'testcontainers>=4')"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # docker raises DockerException, requests errors, FileNotFoundError...
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


class DockerServer:
    kind = "docker"

    def __init__(self, image: str = DEFAULT_IMAGE, startup_timeout: float = 120.0) -> None:
        self.image = image
        self.startup_timeout = startup_timeout
        self._container: Any = None
        self._info: ConnInfo | None = None

    def __enter__(self) -> DockerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        why = docker_engine_error()
        if why:
            raise ProvisionError(f"--db docker: {why}. Start Docker (`systemctl start docker`) or use "
                                 "`--db local` (installed PostgreSQL + PostGIS) or `--db postgresql://...`.")
        try:
            from testcontainers.postgres import PostgresContainer
        except ImportError as exc:
            raise ProvisionError("--db docker needs testcontainers: pip install 'testcontainers>=4'") from exc
        container = PostgresContainer(self.image, username="postgres", password="txt2sql", dbname="postgres",
                                      driver=None)
        try:
            container.start()
        except Exception as exc:
            raise ProvisionError(f"--db docker: could not start {self.image}: {exc}. "
                                 "Hint: `docker pull` it first, or pass --db local.") from exc
        self._container = container
        self._info = ConnInfo(host=container.get_container_host_ip(),
                              port=int(container.get_exposed_port(5432)), user="postgres", password="txt2sql")
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.is_alive():
                return
            if time.monotonic() > deadline:
                logs = self.logs()
                self.stop()
                raise ProvisionError(f"{self.image} did not accept connections in {self.startup_timeout:.0f}s.\n{logs}")
            time.sleep(0.5)

    @property
    def admin(self) -> ConnInfo:
        if self._info is None:
            raise ProvisionError("the docker server is not started")
        return self._info

    def is_alive(self) -> bool:
        return server_answers(self.admin)

    def recover(self) -> bool:
        return self.is_alive()

    def logs(self) -> str:
        if self._container is None:
            return ""
        try:
            out, err = self._container.get_logs()
            return (out + err).decode("utf-8", "replace")[-4000:]
        except Exception:
            return "(no container logs)"

    def stop(self) -> None:
        if self._container is not None:
            try:
                self._container.stop()
            finally:
                self._container = None
