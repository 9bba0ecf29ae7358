"""Shared fixtures. Integration tests use a real throwaway PostGIS cluster, never a mock database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import ProvisionError

pytest_plugins = ["pytester"]

DATA = Path(__file__).parent / "data"
MINI = DATA / "mini"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One local PostgreSQL + PostGIS cluster for the whole test session."""
    from harness.db.local import LocalCluster
    try:
        server = LocalCluster()
    except ProvisionError as exc:
        pytest.skip(f"no local PostgreSQL + PostGIS: {exc}")
    with server:
        yield server


@pytest.fixture(scope="session")
def mini_benchmark():
    from harness.benchmark.loader import load_benchmark
    return load_benchmark(MINI, "test")


@pytest.fixture(scope="session")
def mini_fixtures(pg_server, mini_benchmark):
    from harness.db.fixture import FixtureDatabases
    with FixtureDatabases(pg_server, mini_benchmark, statement_timeout_ms=2000) as fx:
        yield fx


@pytest.fixture()
def reader(mini_fixtures):
    """A SafeExecutor on the first data variant of the mini benchmark."""
    from harness.db.executor import SafeExecutor
    vdb = mini_fixtures.variants("default")[0]
    ex = SafeExecutor(mini_fixtures.reader(vdb), statement_timeout_ms=1500, row_cap=1000)
    yield ex
    ex.close()
