"""sqlglot's warnings silenced while the harness parses untrusted SQL (a model's output warns a lot).

``Logger.setLevel`` clears the level cache of every logger in the process, several hundred once torch
and transformers are imported, and a run parses about a thousand times: that was 0.1-0.2 s of the main
job's scoring. The level is therefore only set when it is not ERROR already (``harness.db.guard`` sets
it so when imported), and put back afterwards as before.

>>> import logging
>>> with sqlglot_errors_only():
...     logging.getLogger("sqlglot").level == logging.ERROR
True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

LOGGER = "sqlglot"


@contextlib.contextmanager
def sqlglot_errors_only() -> Iterator[None]:
    """sqlglot's logger at ERROR for the block, its own level restored after."""
    logger = logging.getLogger(LOGGER)
    previous = logger.level
    if previous == logging.ERROR:
        yield
        return
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
