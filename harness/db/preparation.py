"""An evaluation's databases, prepared in a thread while the model loads.

Starting the server, building the fixture databases and checksumming them does not depend on the model.
Loading a model keeps one core busy in the harness (imports, weights) while PostgreSQL works in its own
processes, so side by side the two take the longer of them instead of the sum (the embedded model on
2 cores: about 3 s saved, docs/performance.md). Nothing database-side runs beside *generation*: on a CPU
the model uses every core, and measured there, database work during generation slowed it by more than
the work itself took.

``with DatabasePreparation(server, benchmark) as databases: ...; ready = databases.ready()``. An error of
the preparation is the one ``with server, FixtureDatabases(server, benchmark)`` raises, raised again by
``ready()`` in the caller's thread, so a run never starts generating without its database. Leaving the
block, whatever happened (an error, Ctrl-C, SIGTERM), waits for the thread, then drops the fixture
databases (unless the server is disposable: stopping it removes them) and stops the server.
``release()``, once the databases are no longer needed, starts that teardown in a thread of its own (the
report renders meanwhile); leaving the block then waits for it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from harness.benchmark.model import Benchmark
from harness.db.fixture import FixtureDatabases
from harness.db.server import Server, exit_on_sigterm


@dataclass(frozen=True)
class ReadyDatabases:
    """What the scoring needs: the fixture databases, and their checksums before any query ran."""

    fixtures: FixtureDatabases
    checksums: dict[str, str]


class DatabasePreparation:
    """Starts ``server`` (not yet started, as ``provision`` returns it), builds the benchmark's fixture
    databases on it and checksums them, in a thread; tears everything down on exit."""

    def __init__(self, server: Server, benchmark: Benchmark, *, statement_timeout_ms: int = 10_000) -> None:
        self.server = server
        self.fixtures = FixtureDatabases(server, benchmark, statement_timeout_ms=statement_timeout_ms)
        self.seconds = 0.0  # how long the preparation took in its thread
        self.teardown_seconds = 0.0
        self._thread = threading.Thread(target=self._prepare, name="txt2sql-databases")
        self._teardown: threading.Thread | None = None  # set by release()
        self._teardown_error: BaseException | None = None
        self._cancel = threading.Event()  # set on exit: a preparation still running stops at its next step
        self._ready: ReadyDatabases | None = None
        self._error: BaseException | None = None
        self._building = False  # the fixture build has begun: its databases must be dropped

    def __enter__(self) -> DatabasePreparation:
        # A signal handler can only be installed from the main thread: the provisioners' own call, from
        # the preparation's thread, would silently leave SIGTERM skipping the teardown below.
        exit_on_sigterm()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._teardown is None:
            self._tear_down()
            return
        self._teardown.join()
        if self._teardown_error is not None:  # raised where an inline teardown would have raised it
            raise self._teardown_error

    def release(self) -> None:
        """Tear down in the background from now on: the scoring is done."""
        if self._teardown is None:
            self._teardown = threading.Thread(target=self._tear_down_in_background, name="txt2sql-teardown")
            self._teardown.start()

    def _tear_down_in_background(self) -> None:
        try:
            self._tear_down()
        except BaseException as exc:  # handed to the caller's thread by __exit__
            self._teardown_error = exc

    def _tear_down(self) -> None:
        self._cancel.set()
        self._thread.join()
        t0 = time.monotonic()
        try:
            if self._building and not self.server.disposable:  # a disposable server goes with them
                self.fixtures.drop()
        finally:
            self.server.stop()  # idempotent, and safe after a failed start
            self.teardown_seconds = time.monotonic() - t0

    def _prepare(self) -> None:
        t0 = time.monotonic()
        try:
            self.server.start()
            if self._cancel.is_set():
                return
            self._building = True
            self.fixtures.build()
            if self._cancel.is_set():
                return
            self._ready = ReadyDatabases(self.fixtures, self.fixtures.checksums())
        except BaseException as exc:  # handed to the caller's thread by ready()
            self._error = exc
        finally:
            self.seconds = time.monotonic() - t0

    def ready(self) -> ReadyDatabases:
        """Wait for the preparation; its error, if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._ready is None:  # only after __exit__ cancelled it; kept explicit rather than asserted
            raise RuntimeError("internal error: the database preparation was cancelled before it finished")
        return self._ready
