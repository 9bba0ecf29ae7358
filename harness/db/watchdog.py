"""The harness's reaper: waits for the harness process to die, then removes what it left running.

``python -m harness.db.watchdog PID local BINDIR ROOT`` stops the local cluster in ROOT and deletes it;
``python -m harness.db.watchdog PID docker OWNER`` removes the containers labelled
``org.txt2sql.owner=OWNER``. Provisioners start it detached (its own session, so Ctrl-C in the
terminal does not reach it) and terminate it after a clean stop, so even ``kill -9`` of the harness
leaves no server behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def start(*args: str) -> subprocess.Popen[bytes]:
    """This reaper, detached (its own session), watching the current process."""
    argv = [sys.executable, "-m", "harness.db.watchdog", str(os.getpid()), *args]
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """End a reaper after a clean stop (it has nothing left to do)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_local(bindir: Path, root: Path) -> None:
    datadir = root / "data"
    if (datadir / "postmaster.pid").exists():
        cmd = [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            st = root.stat()
            kwargs = {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}
        subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    shutil.rmtree(root, ignore_errors=True)


def reap_docker(owner: str) -> int:
    """Remove (forcefully, with volumes) every container labelled with ``owner``; the number removed."""
    import docker

    from harness.db.docker import OWNER_LABEL
    client = docker.from_env(timeout=30)
    removed = 0
    try:
        for container in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
            try:
                container.remove(force=True, v=True)
                removed += 1
            except docker.errors.NotFound:  # removed meanwhile
                pass
    finally:
        client.close()
    return removed


def main(argv: list[str]) -> int:
    pid, kind, args = int(argv[0]), argv[1], argv[2:]
    while _alive(pid):
        time.sleep(0.5)
    if kind == "local":
        reap_local(Path(args[0]), Path(args[1]))
    elif kind == "docker":
        reap_docker(args[0])
    else:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
