"""Benchmark format: valid directories load; every kind of bad input names file, line and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.benchmark.loader import context_from_ddl, load_benchmark
from harness.errors import BenchmarkError

from ..conftest import MINI


def test_mini_loads_with_variants_alternatives_and_defaults():
    b = load_benchmark(MINI, "test")
    assert [v.name for v in b.databases["default"].variants] == ["v1", "v2"]
    names = {q.id: q for q in b.questions}
    assert names["names"].golds == ("SELECT name FROM rfgcpy WHERE ssqx = '西湖区';",
                                    "SELECT name FROM rfgcpy WHERE ssqx LIKE '西湖%';")
    assert "CREATE TABLE rfgcpy" in names["largest"].context  # built from the DDL when absent
    assert "CREATE EXTENSION" not in names["largest"].context
    dev = load_benchmark(MINI, "dev")
    assert dev.questions[0].id == "1"
    assert len(b.sha256) == 64 and b.sha256 != dev.sha256


def test_id_defaults_to_line_number(tmp_path):
    shutil.copy(MINI / "schema.sql", tmp_path / "schema.sql")
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "SELECT 1"}\n\n'
                                         '{"question": "r", "answer": "SELECT 2"}\n', encoding="utf-8")
    b = load_benchmark(tmp_path, "test")
    assert [q.id for q in b.questions] == ["1", "3"]
    assert b.databases["default"].variants[0].path is None


def write(tmp_path: Path, lines: list[str]) -> Path:
    shutil.copy(MINI / "schema.sql", tmp_path / "schema.sql")
    (tmp_path / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


GOOD = json.dumps({"question": "q", "answer": "SELECT 1"})


@pytest.mark.parametrize("bad,line,field,text", [
    ("{not json", 2, None, "invalid JSON"),
    (json.dumps({"answer": "SELECT 1"}), 2, "question", "is missing"),
    (json.dumps({"question": "q"}), 2, "answer", "is missing"),
    (json.dumps({"question": "q", "answer": []}), 2, "answer", "non-empty list"),
    (json.dumps({"question": "q", "answer": "SELECT 1", "db": "other"}), 2, "db", "unknown database"),
    (json.dumps({"question": "q", "answer": "SELECT 1", "tags": "x", "id": True}), 2, "id", "string or an integer"),
    (json.dumps({"question": "q", "answer": "SELECT 1", "tags": [1]}), 2, "tags", "list of strings"),
    (json.dumps([1, 2]), 2, None, "JSON object"),
    (GOOD, 2, "id", "duplicate id"),
])
def test_bad_lines_name_file_line_field(tmp_path, bad, line, field, text):
    root = write(tmp_path, [json.dumps({"id": 2, "question": "q", "answer": "SELECT 1"}) if bad == GOOD else GOOD,
                            bad])
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(root, "test")
    msg = str(err.value)
    assert f"test.jsonl:{line}:" in msg and text in msg
    if field:
        assert f"field '{field}'" in msg


def test_missing_split_lists_available(tmp_path):
    with pytest.raises(BenchmarkError, match="splits here: dev, test"):
        load_benchmark(MINI, "nope")


def test_not_a_benchmark(tmp_path):
    with pytest.raises(BenchmarkError, match="no schema.sql"):
        load_benchmark(tmp_path, "test")


def test_schema_is_read_once_at_load_and_undecodable_bytes_name_the_file(tmp_path):
    root = write(tmp_path, [GOOD])
    ddl = (MINI / "schema.sql").read_text(encoding="utf-8")
    b = load_benchmark(root, "test")
    (root / "schema.sql").write_text("-- edited after loading\n", encoding="utf-8")
    assert b.databases["default"].schema_sql == ddl  # what the run uses is what was loaded
    (root / "schema.sql").write_bytes("CREATE TABLE t (a int);\n-- 坏\n".encode("gbk"))
    with pytest.raises(BenchmarkError, match=r"schema.sql:2: is not UTF-8"):
        load_benchmark(root, "test")


def test_several_databases_need_db_field(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "databases" / name).mkdir(parents=True)
        (tmp_path / "databases" / name / "schema.sql").write_text(f"CREATE TABLE {name}_t (x int);\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "SELECT 1", "db": "b"}) + "\n"
                                         + GOOD + "\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"test.jsonl:2: field 'db' is missing"):
        load_benchmark(tmp_path, "test")


def test_ddl_that_fails_names_the_file(pg_server, tmp_path):
    from harness.db.fixture import FixtureDatabases
    (tmp_path / "schema.sql").write_text("CREATE TABLE ok (a int);\nCREATE TABLE bad (a notatype);\n")
    (tmp_path / "test.jsonl").write_text(GOOD + "\n")
    b = load_benchmark(tmp_path, "test")
    with pytest.raises(BenchmarkError, match=r"schema.sql:2: failed to load"):
        with FixtureDatabases(pg_server, b):
            pass


def test_context_from_ddl_keeps_tables_and_comments():
    ddl = "CREATE EXTENSION IF NOT EXISTS postgis;\n-- note\nCREATE TABLE t (a int);\nCOMMENT ON TABLE t IS '表';\n"
    ctx = context_from_ddl(ddl)
    assert "CREATE TABLE t" in ctx and "COMMENT ON TABLE t" in ctx and "EXTENSION" not in ctx
