"""PostGIS in a container through testcontainers, on any Docker-compatible engine (Docker, or podman's
Docker API service: ``eval "$(bash scripts/container-engine.sh)"``).

The image is ``--docker-image`` / ``TXT2SQL_DOCKER_IMAGE``, else the official ``postgis/postgis:15-3.4``;
when that cannot be pulled (a blocked registry), the image built here without any registry by
``txt2sql image build`` stands in, and the harness says so. The container carries a label naming this
run, and a watchdog process removes it if the harness dies without cleaning up (``kill -9``), as it
does for the local cluster; testcontainers' own reaper (Ryuk, an image to pull) is not used.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import subprocess
from typing import Any

from harness.db import watchdog
from harness.db.image import LOCAL_TAG
from harness.db.server import ConnInfo, Server, exit_on_sigterm
from harness.errors import ProvisionError

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "postgis/postgis:15-3.4"
IMAGE_ENV = "TXT2SQL_DOCKER_IMAGE"
DEFAULT_SOCKET = "/var/run/docker.sock"  # where the docker client connects when DOCKER_HOST is not set
OWNER_LABEL = "org.txt2sql.owner"  # <pid>-<token> of the harness process that started the container
PASSWORD = "txt2sql"
# a throwaway server: fsync buys nothing and costs seconds; synchronous_commit stays on (see local.py)
SERVER_ARGS = ("postgres", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=60")


def docker_engine_error() -> str | None:
    """None if a Docker engine answers; else why not. Takes milliseconds when there is no engine.

    With no ``DOCKER_HOST`` the client would try only its default socket; when that file does not exist
    the answer is known without importing docker (and requests with it: 0.07-0.25 s of every
    ``--db auto`` run on a machine without an engine)."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists(DEFAULT_SOCKET):
        return f"no Docker engine answers (DOCKER_HOST is not set and {DEFAULT_SOCKET} does not exist)"
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


def configure_testcontainers(client: Any) -> None:
    """The two settings testcontainers needs here, unless the user set them: no Ryuk (its image may not
    be pullable; the watchdog reaps instead), and, on podman, the engine's host as the address to
    connect to (else testcontainers, finding /.dockerenv, inspects "its own container" and fails on
    podman's reply with ``KeyError: 'HostConfig'``)."""
    from testcontainers.core.config import ConnectionMode, testcontainers_config
    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True
    if "TESTCONTAINERS_CONNECTION_MODE" not in os.environ and is_podman(client):
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host


def is_podman(client: Any) -> bool:
    try:
        components = client.version().get("Components") or []
    except Exception:  # an engine that cannot say: treat as Docker
        return False
    return any("podman" in str(c.get("Name", "")).lower() for c in components)


def choose_image(client: Any, requested: str | None) -> str:
    """The image to run: the requested one (pulled if missing), else the official one, else the local
    build. Raises ProvisionError saying what to do when none is available."""
    import docker
    if requested:
        why = _ensure_image(client, requested)
        if why is None:
            return requested
        hint = "build it: `txt2sql image build`" if requested == LOCAL_TAG else \
            f"pull it (`docker pull {requested}`), or build the harness's own with `txt2sql image build`"
        raise ProvisionError(f"--docker-image {requested}: not in the engine and cannot be pulled ({why}); {hint}.")
    why = _ensure_image(client, DEFAULT_IMAGE)
    if why is None:
        return DEFAULT_IMAGE
    try:
        client.images.get(LOCAL_TAG)
    except docker.errors.ImageNotFound:
        raise ProvisionError(
            f"--db docker: {DEFAULT_IMAGE} cannot be pulled ({why}) and there is no locally built {LOCAL_TAG}. "
            "Build one from distribution packages, without any registry: `txt2sql image build` (as root, "
            "about a minute); or pass --docker-image NAME; or use --db local.") from None
    log.warning("%s cannot be pulled (%s); using the locally built %s instead", DEFAULT_IMAGE, why, LOCAL_TAG)
    return LOCAL_TAG


def _ensure_image(client: Any, name: str) -> str | None:
    """None when ``name`` is in the engine (pulled now if needed); else why it is not."""
    import docker
    try:
        client.images.get(name)
        return None
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(name)
        return None
    except docker.errors.APIError as exc:
        return " ".join(str(getattr(exc, "explanation", None) or exc).split())[:300]


def _postgres_container_class() -> Any:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        try:  # testcontainers before 4.10
            from testcontainers.postgres import PostgresContainer
        except ImportError as exc:
            raise ProvisionError("--db docker needs testcontainers: pip install 'testcontainers>=4'") from exc
    return PostgresContainer


class DockerServer(Server):
    """``with DockerServer() as server: ...``: a PostGIS container, removed at exit, on Ctrl-C, on
    SIGTERM and (through the watchdog) when the harness is killed."""

    kind = "docker"
    disposable = True  # stop() removes the container with its volumes

    def __init__(self, image: str | None = None, startup_timeout: float = 120.0) -> None:
        self.requested_image = image or os.environ.get(IMAGE_ENV) or None
        self.image: str | None = None
        self.startup_timeout = startup_timeout
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._container: Any = None
        self._info: ConnInfo | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        why = docker_engine_error()
        if why:
            raise ProvisionError(f"--db docker: {why}. Start Docker (`systemctl start docker`) or podman's "
                                 "Docker API service (`eval \"$(bash scripts/container-engine.sh)\"`), or use "
                                 "`--db local` (installed PostgreSQL + PostGIS) or `--db postgresql://...`.")
        PostgresContainer = _postgres_container_class()
        import docker
        client = docker.from_env()
        try:
            configure_testcontainers(client)
            self.image = choose_image(client, self.requested_image)
        finally:
            client.close()
        atexit.register(self.stop)
        exit_on_sigterm()
        self._start_watchdog()  # before the container exists: a kill during start-up leaves nothing either
        container = PostgresContainer(self.image, username="postgres", password=PASSWORD, dbname="postgres",
                                      driver=None, labels={OWNER_LABEL: self.owner})
        container.with_command(list(SERVER_ARGS))
        self._container = container
        try:
            container.start()
        except Exception as exc:
            raise ProvisionError(f"--db docker: could not start {self.image}: {exc}\n{self.logs()}") from exc
        self._info = ConnInfo(host=container.get_container_host_ip(),
                              port=int(container.get_exposed_port(5432)), user="postgres", password=PASSWORD)
        self.wait_ready(self.startup_timeout, f"the container of {self.image}")

    @property
    def admin(self) -> ConnInfo:
        if self._info is None:
            raise ProvisionError("the docker server is not started")
        return self._info

    def logs(self) -> str:
        if self._container is None or self._container.get_wrapped_container() is None:
            return "(no container logs)"
        try:
            out, err = self._container.get_logs()
            return (out + err).decode("utf-8", "replace")[-4000:]
        except Exception:
            return "(no container logs)"

    def stop(self) -> None:
        container, self._container = self._container, None
        try:
            if container is not None and container.get_wrapped_container() is not None:
                container.stop()  # testcontainers: remove(force=True) with its volumes
        finally:
            self._stop_watchdog()

    def _start_watchdog(self) -> None:
        """A detached process that removes this run's containers if this process dies without doing so."""
        self._watchdog = watchdog.start("docker", self.owner)

    def _stop_watchdog(self) -> None:
        watchdog.stop(self._watchdog)
        self._watchdog = None
