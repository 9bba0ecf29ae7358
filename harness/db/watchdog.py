"""``python -m harness.db.watchdog PID BINDIR ROOT``: waits for PID to die, then stops the cluster in
ROOT and deletes it. Started detached by LocalCluster so that even ``kill -9`` leaves no server behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    pid, bindir, root = int(argv[0]), Path(argv[1]), Path(argv[2])
    while _alive(pid):
        time.sleep(0.5)
    datadir = root / "data"
    if (datadir / "postmaster.pid").exists():
        cmd = [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            st = root.stat()
            kwargs = {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}
        subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
