"""``fixture_intact`` reports a fixture that changed during the run: it is computed from checksums taken
before and after, not assumed."""

from __future__ import annotations

import json

from harness.db.fixture import FixtureDatabases
from harness.db.server import admin_connection
from harness.pipeline import EvalConfig, evaluate
from tests.conftest import MINI


def test_a_fixture_changed_during_the_run_is_reported(tmp_path, pg_server, monkeypatch, predictions):
    """The second checksum (after scoring) first makes the change a write that got through every wall
    would leave: an UPDATE that keeps every row count. The run uses the session's server as a DSN."""
    a = pg_server.admin
    original = FixtureDatabases.checksums
    calls: list[int] = []

    def checksums(self: FixtureDatabases) -> dict[str, str]:
        calls.append(1)
        if len(calls) == 2:
            vdb = next(iter(self.databases.values()))
            with admin_connection(self.server.admin, dbname=vdb.dbname) as conn:
                conn.execute("UPDATE rfgcpy SET name = name || '!' WHERE id = (SELECT min(id) FROM rfgcpy)")
        return original(self)

    monkeypatch.setattr(FixtureDatabases, "checksums", checksums)
    out = tmp_path / "run"
    result = evaluate(EvalConfig(benchmark=MINI, model=f"replay:{predictions}", out=out,
                                 db=f"host={a.host} port={a.port} user={a.user} dbname=postgres",
                                 use_cache=False, progress=False))
    assert len(calls) == 2
    assert result.summary.fixture_intact is False
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["fixture_intact"] is False
