"""``python -m tests.reliability.launch_cli eval ...``: the real ``txt2sql`` CLI with the test-only
``counted:`` backend registered."""

from __future__ import annotations

import sys

from harness.cli import main
from tests.reliability.counted_backend import register

if __name__ == "__main__":
    register()
    sys.exit(main(sys.argv[1:]))
