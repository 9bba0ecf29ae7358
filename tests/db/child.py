"""A Python child process that holds a database server, for the tests that signal it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

# A child inherits ignored signals (pytest launched in the background of a non-interactive shell runs
# with SIGINT ignored): it first sets the dispositions an interactive launch gives.
INTERACTIVE_SIGNALS = ("import signal, time\n"
                       "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                       "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n")


def start_holding(body: str, **env: str) -> subprocess.Popen[str]:
    """Run ``body`` (after ``INTERACTIVE_SIGNALS``) in a child at the repository root; return once it
    printed ``ready``, i.e. once its server is up."""
    proc = subprocess.Popen([sys.executable, "-c", INTERACTIVE_SIGNALS + body], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO), **env))
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise AssertionError(f"the child did not get its server up (printed {line!r})")
    return proc
