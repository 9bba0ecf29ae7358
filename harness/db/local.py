"""A throwaway PostgreSQL + PostGIS cluster from the installed binaries.

The cluster lives in a fresh temp dir, listens only on a unix socket inside it (so parallel runs never
collide on ports), and is torn down on exit, Ctrl-C, or -- through a watchdog process -- when the
harness is killed with SIGKILL. PostgreSQL refuses to run as root, so as root the server runs as the
unprivileged ``postgres`` account; as an ordinary user it runs as that user.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from harness.db import watchdog
from harness.db.server import ConnInfo, Server, exit_on_sigterm
from harness.errors import ProvisionError

POSTGIS_HINT = "Install PostGIS for the server's version, e.g. `apt-get install postgresql-15-postgis-3`."
SERVER_SETTINGS = {
    # a throwaway cluster: surviving a power cut buys nothing and fsync costs seconds. synchronous_commit
    # stays on: with fsync off a commit only reaches the kernel, and a killed server (which the harness
    # restarts mid-run) must not lose the fixture's last grants
    "fsync": "off", "full_page_writes": "off",
    "listen_addresses": "", "max_connections": "60", "shared_buffers": "64MB",
    "log_min_messages": "warning",
}
POSTGIS_LIBRARY = "postgis-3"  # the library of PostGIS 3.x, whatever its minor version


def find_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (env TXT2SQL_PG_BINDIR wins)."""
    env = os.environ.get("TXT2SQL_PG_BINDIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                                           reverse=True)]
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(Path(which).resolve().parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and (c / "postgres").exists():
            return c
    raise ProvisionError("No PostgreSQL server binaries found (looked for initdb/pg_ctl in "
                         f"{', '.join(str(c) for c in candidates) or '/usr/lib/postgresql/*/bin'}). "
                         "Install them (`apt-get install postgresql-15 postgresql-15-postgis-3`) "
                         "or set TXT2SQL_PG_BINDIR.")


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Can ``user`` reach into ``path``? (execute permission on it and every directory above it)"""
    for p in [path.resolve(), *path.resolve().parents]:
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _process_name(pid: int) -> str | None:
    """The running process ``pid``'s name (Linux /proc), or None: no such process, a zombie (exited,
    waiting to be reaped), or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return None if rest.split()[:1] == ["Z"] else name


def postgis_library(bindir: Path) -> str | None:
    """The PostGIS library to preload (``postgis-3``), when the server's library directory has it.

    Preloaded, the postmaster loads it once and every session inherits it; otherwise each new session
    loads it (and the libraries it links) again: about 4 ms of server CPU a session, and every predicted
    query runs in a session of its own."""
    try:
        libdir = subprocess.run([str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return POSTGIS_LIBRARY if (Path(libdir) / f"{POSTGIS_LIBRARY}.so").is_file() else None


def postgis_available(bindir: Path) -> bool:
    try:
        share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        share = str(bindir.parent.parent.parent.parent / "share" / "postgresql" / bindir.parent.name)
    return bool(glob.glob(os.path.join(share, "extension", "postgis.control")))


class LocalCluster(Server):
    """``with LocalCluster() as server: ...`` -- configure, start, wait until ready, stop.

    ``initdb_options`` replace the cluster's encoding and locale (UTF8, C.UTF-8), e.g. to test the
    harness against a server whose default is ``SQL_ASCII``."""

    kind = "local"
    disposable = True  # stop() deletes the cluster's directory

    def __init__(self, *, startup_timeout: float = 30.0, base_dir: str | None = None,
                 initdb_options: tuple[str, ...] = ("-E", "UTF8", "--locale=C.UTF-8")) -> None:
        self.bindir = find_bindir()
        if not postgis_available(self.bindir):
            raise ProvisionError(f"PostGIS is not installed for the PostgreSQL in {self.bindir}. {POSTGIS_HINT}")
        self.startup_timeout = startup_timeout
        self.base_dir = base_dir or os.environ.get("TXT2SQL_TMPDIR") or tempfile.gettempdir()
        self.root: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._stopped = False
        self.initdb_options = initdb_options

    # -- lifecycle -------------------------------------------------------------------------------
    def _started_root(self) -> Path:
        # an internal invariant, checked explicitly (an assert would vanish under python -O)
        if self.root is None:
            raise RuntimeError("the local cluster has not been started: use `with LocalCluster() as server:` "
                               "(or call start()) before using its data directory, log or connection")
        return self.root

    @property
    def datadir(self) -> Path:
        return self._started_root() / "data"

    @property
    def logfile(self) -> Path:
        return self._started_root() / "server.log"

    @property
    def admin(self) -> ConnInfo:
        return ConnInfo(host=str(self._started_root()), port=5432, user="postgres")

    def start(self) -> None:
        self._run_as = self._pick_os_user()
        if self._run_as is not None and not _traversable_by(Path(self.base_dir), self._run_as):
            raise ProvisionError(
                f"the OS user '{self._run_as.pw_name}' that runs PostgreSQL cannot enter {self.base_dir} (or a "
                "directory above it). Set TXT2SQL_TMPDIR to a directory it can reach, e.g. "
                "`export TXT2SQL_TMPDIR=/tmp`.")
        self.root = Path(tempfile.mkdtemp(prefix="txt2sql-pg-", dir=self.base_dir))
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        atexit.register(self.stop)
        exit_on_sigterm()
        self._start_watchdog()
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
                   *self.initdb_options, "--no-sync", "--no-instructions"], what="initdb")
        with open(self.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as fh:
            for k, v in SERVER_SETTINGS.items():
                fh.write(f"{k} = '{v}'\n")
            fh.write(f"unix_socket_directories = '{self.root}'\n")
            library = postgis_library(self.bindir)
            if library is not None:
                fh.write(f"shared_preload_libraries = '{library}'\n")
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        # -l: without a log file pg_ctl keeps our pipes open and the call never returns
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                   "-t", str(int(self.startup_timeout)), "start"], what="pg_ctl start")
        self.wait_ready(self.startup_timeout, f"The local PostgreSQL in {self.root}")

    def recover(self) -> bool:
        """Restart a server that died (killed, crashed). Data survives: it is on disk."""
        if self._stopped or self.root is None:
            return False
        if self.is_alive():
            return True
        try:
            pid = self.datadir / "postmaster.pid"
            if pid.exists():
                # a SIGKILLed postmaster leaves its pid file; pg_ctl start refuses while children live
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
                          what="pg_ctl stop", check=False)
            self._pg_ctl_start()
            return True
        except ProvisionError:
            return False

    def logs(self) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        if self._stopped or self.root is None:
            return
        self._stopped = True
        if (self.datadir / "postmaster.pid").exists() and not self._stop_postmaster():
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"],
                      what="pg_ctl stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        watchdog.stop(self._watchdog)

    def _stop_postmaster(self, timeout: float = 10.0) -> bool:
        """Immediate shutdown: SIGQUIT to the postmaster (what ``pg_ctl -m immediate stop`` sends), then
        wait until it is gone, looking every 5 ms (pg_ctl sleeps 100 ms at a time, on the end of a run's
        critical path). False when it could not be done here (no readable pid, not a postgres process,
        not ours to signal, still running at ``timeout``): the caller falls back to pg_ctl."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        if _process_name(pid) != "postgres":  # gone already, or the pid now belongs to something else
            return False
        try:
            os.kill(pid, signal.SIGQUIT)
        except (ProcessLookupError, PermissionError):
            return False
        deadline = time.monotonic() + timeout
        while _process_name(pid) == "postgres":
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # -- helpers ---------------------------------------------------------------------------------
    def _pick_os_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        name = os.environ.get("TXT2SQL_PG_OS_USER", "postgres")
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise ProvisionError(
                f"Running as root, and PostgreSQL refuses to run as root, but there is no OS user '{name}' to run "
                "it as. Create one (`useradd --system postgres`), set TXT2SQL_PG_OS_USER to another "
                "unprivileged account, or run txt2sql as an ordinary user.") from None

    def _run(self, argv: list[str], *, what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        env = dict(os.environ, LC_ALL="C.UTF-8")
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(self.root),
                              stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
        if check and proc.returncode != 0:
            raise ProvisionError(f"{what} failed (exit {proc.returncode}) for the local cluster in {self.root}:\n"
                                 f"{proc.stderr.strip() or proc.stdout.strip()}\nServer log:\n{self.logs()}")
        return proc

    def _start_watchdog(self) -> None:
        """A detached process that tears the cluster down if this process dies without cleaning up."""
        self._watchdog = watchdog.start("local", str(self.bindir), str(self.root))
