"""``txt2sql image build``: the harness's PostGIS image, built from distribution packages alone.

Many users cannot pull ``postgis/postgis`` (a blocked or unreachable registry). This builds an
equivalent image with no registry at all: ``debootstrap`` installs Debian's PostgreSQL + PostGIS into a
root file system, from the mirror apt already uses on this machine, a small entrypoint stands in for
the official image's, and the tree is imported (``docker import``) through whichever Docker-compatible
engine answers (Docker, or podman's API service). The image carries a label with a hash of its
recipe; building again when nothing changed only compares that label.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ProvisionError

log = logging.getLogger(__name__)

LOCAL_TAG = "txt2sql-postgis:15-3"
RECIPE_LABEL = "org.txt2sql.recipe"
PACKAGES = ("postgresql-15-postgis-3", "postgresql-15-postgis-3-scripts")
RECIPE_VERSION = 1
PODMAN_SPILL = "/var/tmp/api_load.tar*"

# Mimics the official postgres image's entrypoint for what testcontainers and the harness use:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, a UTF8 cluster, listen on all addresses, scram
# passwords over TCP, trust on the socket inside the container, the server as PID 1 (as postgres).
ENTRYPOINT = r"""#!/bin/sh
set -eu
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "docker-entrypoint: POSTGRES_PASSWORD is not set" >&2; exit 1
  fi
  pwfile=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 --no-instructions --no-sync
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
fi
if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
"""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content; its hash is the image's label."""

    codename: str
    packages: tuple[str, ...] = PACKAGES
    entrypoint: str = ENTRYPOINT
    version: int = RECIPE_VERSION

    @property
    def digest(self) -> str:
        text = json.dumps([self.codename, self.packages, self.entrypoint, self.changes(), self.version])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def changes(self) -> list[str]:
        path = "/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return [f"ENV PATH={path}", "ENV PGDATA=/var/lib/postgresql/data", "ENV LANG=C.UTF-8",
                'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]', 'CMD ["postgres"]', "EXPOSE 5432"]


@dataclass(frozen=True)
class BuildResult:
    tag: str
    digest: str
    built: bool  # False: the image was already up to date
    seconds: float

    def describe(self) -> str:
        if not self.built:
            return f"{self.tag} is up to date (recipe {self.digest}); nothing to build"
        return f"built {self.tag} (recipe {self.digest}) in {self.seconds:.0f} s"


def host_codename() -> str:
    """The Debian/Ubuntu release of this machine, e.g. ``bookworm``."""
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        fields = {}
    codename = fields.get("VERSION_CODENAME", "").strip('"')
    if not codename:
        raise ProvisionError("txt2sql image build: cannot tell this machine's Debian release (no VERSION_CODENAME "
                             "in /etc/os-release); the image is built from the distribution's own packages.")
    return codename


def apt_mirror(codename: str) -> str:
    """The mirror apt itself uses for ``codename``'s main component, read from apt's configuration."""
    try:
        out = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI) $(CODENAME) $(SUITE) $(COMPONENT)",
                              "Identifier: Packages"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ProvisionError(f"txt2sql image build: cannot read apt's sources ({exc}); run `apt-get update` "
                             "first (the image is built from the mirror apt uses).") from exc
    for line in out.splitlines():
        parts = line.split()
        # the release itself (suite bookworm), not bookworm-updates or -security
        if len(parts) == 4 and parts[1] == codename and parts[2] in (codename, "stable", "oldstable") \
                and parts[3] == "main":
            return parts[0]
    raise ProvisionError(f"txt2sql image build: apt has no source for '{codename} main' (see `apt-get "
                         "indextargets`); add the distribution's mirror to /etc/apt/sources.list and run "
                         "`apt-get update`.")


def engine_client() -> Any:
    """A Docker API client for whichever engine answers (DOCKER_HOST, else the default socket)."""
    from harness.db.docker import docker_engine_error
    why = docker_engine_error()
    if why:
        raise ProvisionError(f"txt2sql image build: {why}. Start Docker, or podman's Docker API service with "
                             "`eval \"$(bash scripts/container-engine.sh)\"`.")
    import docker
    return docker.from_env(timeout=600)


def image_digest(client: Any, tag: str) -> str | None:
    """The recipe label of the image ``tag`` in the engine, or None when there is no such image."""
    import docker
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return (image.labels or {}).get(RECIPE_LABEL, "")


def build_image(tag: str = LOCAL_TAG, *, force: bool = False,
                say: Callable[[str], None] = log.info) -> BuildResult:
    """Build (or find up to date) the harness's PostGIS image under ``tag``; ``say`` reports progress."""
    t0 = time.monotonic()
    recipe = Recipe(codename=host_codename())
    client = engine_client()
    try:
        if not force and image_digest(client, tag) == recipe.digest:
            return BuildResult(tag, recipe.digest, False, time.monotonic() - t0)
        _check_can_debootstrap()
        mirror = apt_mirror(recipe.codename)
        work = Path(tempfile.mkdtemp(prefix="txt2sql-image-", dir=os.environ.get("TXT2SQL_TMPDIR") or "/var/tmp"))
        try:
            root = work / "root"
            say(f"debootstrap {recipe.codename} from {mirror}: {', '.join(recipe.packages)} (about a minute)")
            _debootstrap(recipe, root, mirror)
            say(f"importing {root} as {tag}")
            _import(client, recipe, root, tag)
        finally:
            _unmount_below(work)  # debootstrap mounts /proc and /sys in the tree; never delete through them
            shutil.rmtree(work, ignore_errors=True)
    finally:
        client.close()
    return BuildResult(tag, recipe.digest, True, time.monotonic() - t0)


def _check_can_debootstrap() -> None:
    if shutil.which("debootstrap") is None:
        raise ProvisionError("txt2sql image build needs debootstrap: `apt-get install debootstrap` "
                             "(it installs the distribution's packages into the image; no registry is used).")
    if os.geteuid() != 0:
        raise ProvisionError("txt2sql image build runs debootstrap, which needs root: run it with sudo "
                             "(`sudo .venv/bin/txt2sql image build`).")


def _debootstrap(recipe: Recipe, root: Path, mirror: str) -> None:
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}", recipe.codename,
            str(root), mirror]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ProvisionError(f"txt2sql image build: `{' '.join(argv)}` failed (exit {proc.returncode}):\n{tail}")
    entry = root / "usr/local/bin/docker-entrypoint.sh"
    entry.write_text(recipe.entrypoint, encoding="utf-8")
    entry.chmod(0o755)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (root / cache).glob("*"):
            if item.is_file():
                item.unlink()


def _unmount_below(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, stdin=subprocess.DEVNULL)


def _import(client: Any, recipe: Recipe, root: Path, tag: str) -> None:
    """``docker import`` of the tree, streamed through tar (the API takes a tar archive), then tagged.

    The tag is applied separately: podman's Docker API imports under ``:latest`` whatever tag is asked.
    """
    changes = [*recipe.changes(), f"LABEL {RECIPE_LABEL}={recipe.digest}"]
    repository, version = split_tag(tag)
    previous = _image_id(client, tag)
    spills = set(glob.glob(PODMAN_SPILL))
    tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "--one-file-system", "-c", "."], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        reply = client.api.import_image(src=tar.stdout, repository=repository, tag=version, changes=changes,
                                        stream_src=True)
    finally:
        _, err = tar.communicate()
        from harness.db.docker import is_podman
        if is_podman(client):  # podman 4 keeps a copy of every imported archive in /var/tmp
            for spill in set(glob.glob(PODMAN_SPILL)) - spills:
                Path(spill).unlink(missing_ok=True)
    if tar.returncode != 0:
        raise ProvisionError(f"txt2sql image build: tar of {root} failed: {err.decode(errors='replace')[-500:]}")
    image_id = _imported_id(reply)
    client.images.get(image_id).tag(repository, version)
    if version != "latest" and _image_id(client, f"{repository}:latest") == image_id:
        client.images.remove(f"{repository}:latest")  # podman's stray tag
    if image_digest(client, tag) != recipe.digest:
        raise ProvisionError(f"txt2sql image build: the engine did not store {tag} with label "
                             f"{RECIPE_LABEL}={recipe.digest}")
    if previous and previous != image_id:
        _remove_quietly(client, previous)  # the out-of-date build: hundreds of MB


def split_tag(tag: str) -> tuple[str, str]:
    """``registry:5000/name:tag`` -> (``registry:5000/name``, ``tag``); no tag means ``latest``.

    >>> split_tag("txt2sql-postgis:15-3"), split_tag("localhost:5000/pg")
    (('txt2sql-postgis', '15-3'), ('localhost:5000/pg', 'latest'))
    """
    repository, sep, version = tag.rpartition(":")
    if not sep or "/" in version:
        return tag, "latest"
    return repository, version


def _imported_id(reply: str) -> str:
    for line in reversed(reply.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        for key in ("id", "status"):
            value = str(data.get(key) or "")
            if value.startswith("sha256:"):
                return value
    raise ProvisionError(f"txt2sql image build: the engine's import gave no image id: {reply[-300:]!r}")


def _image_id(client: Any, tag: str) -> str | None:
    import docker
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def _remove_quietly(client: Any, image_id: str) -> None:
    import docker
    try:
        client.images.remove(image_id)
    except docker.errors.APIError as exc:  # still used by a container: leave it
        log.info("kept the previous image %s: %s", image_id, exc)
