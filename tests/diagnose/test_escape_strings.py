"""``SELECT E'it\\'s; ok' FROM t;`` end to end: no stop inside the string, no false ``truncated`` flag.

Issue 10 item 2: the stop criterion and extraction each read quotes their own way, so generation
stopped inside the escape string and extraction then saw an unfinished statement.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.diagnose import diagnose
from harness.models.replay import read_predictions
from harness.models.stopping import sql_stop
from harness.sql.extract import extract_sql
from harness.sql.schema import SchemaCatalog

CATALOG = SchemaCatalog.from_ddl("CREATE TABLE t (id int, name text);")

# (model output, the statement extraction must return)
OUTPUTS = [
    ("SELECT E'it\\'s; ok' FROM t;", "SELECT E'it\\'s; ok' FROM t"),
    ("答案：SELECT name FROM t WHERE name = E'a\\\\'; \n以上", "SELECT name FROM t WHERE name = E'a\\\\'"),
    ("```sql\nSELECT id FROM t WHERE name <> e'\\';' || 'x'\n```", "SELECT id FROM t WHERE name <> e'\\';' || 'x'"),
    ("SELECT $q$it's; ok$q$ AS \"a;\"\"b\" FROM t; SELECT 2;", "SELECT $q$it's; ok$q$ AS \"a;\"\"b\" FROM t"),
    ("SELECT 'C:\\' AS dir FROM t;", "SELECT 'C:\\' AS dir FROM t"),  # standard string: '\' is complete
]


def _replayed(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "output": out}) + "\n" for i, (out, _) in enumerate(OUTPUTS)),
                    encoding="utf-8")
    return {pid: gen.text for pid, gen in read_predictions(path).items()}


def test_replayed_escape_strings_are_complete_statements(tmp_path: Path) -> None:
    outputs = _replayed(tmp_path)
    for i, (_, expected) in enumerate(OUTPUTS):
        raw = outputs[str(i)]
        extracted = extract_sql(raw)
        assert (extracted.sql, extracted.terminated) == (expected, True), extracted.note
        got = diagnose(raw, extracted, "stop", "", "", CATALOG)
        assert "truncated" not in got.flags, got.details


def _stream(text: str, step: int = 3) -> str:
    """What a model that writes ``text`` step characters at a time returns under the stop criterion."""
    for end in range(step, len(text) + step, step):
        if sql_stop(text[:end]):
            return text[:end]
    return text


def test_generation_does_not_stop_inside_an_escape_string() -> None:
    raw = _stream("SELECT E'it\\'s; ok' FROM t; SELECT 2;")
    extracted = extract_sql(raw)
    assert extracted.sql == "SELECT E'it\\'s; ok' FROM t"
    assert "truncated" not in diagnose(raw, extracted, "stop", "", "", CATALOG).flags
