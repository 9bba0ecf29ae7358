"""The replay backend: recorded outputs by id, and malformed files named by line and field."""

from __future__ import annotations

import hashlib
import json

import pytest

from harness.errors import ModelBackendError, PredictionsError
from harness.models.base import GenerationConfig, Prompt
from harness.models.replay import ReplayBackend

CFG = GenerationConfig()


def write(path, *lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln, ensure_ascii=False)) + "\n"
                            for ln in lines), encoding="utf-8")
    return path


def test_replays_by_id_and_flags_missing_ids(tmp_path):
    f = write(tmp_path / "p.jsonl", {"id": "q1", "output": "SELECT 1;"},
              {"id": 2, "output": "SELECT a AND a AND a", "finish_reason": "length"}, "")
    b = ReplayBackend(f)
    done = []
    gens = b.generate([Prompt("2", "x"), Prompt("q1", "y"), Prompt("q9", "z")], CFG, progress=done.append)
    assert [(g.id, g.text, g.finish_reason) for g in gens[:2]] == \
        [("2", "SELECT a AND a AND a", "length"), ("q1", "SELECT 1;", "stop")]
    assert gens[2].text == "" and gens[2].error == f"no prediction for id q9 in {f}"
    assert done == [3]
    assert b.fingerprint == hashlib.sha256(f.read_bytes()).hexdigest()
    assert b.spec == f"replay:{f}"


@pytest.mark.parametrize(("line", "field", "message"), [
    ('{"id": "a", "output": "x"', None, "invalid JSON"),
    ('["a", "x"]', None, "must be a JSON object"),
    ('{"output": "x"}', "id", "is missing"),
    ('{"id": null, "output": "x"}', "id", "must be a string"),
    ('{"id": "a"}', "output", "is missing"),
    ('{"id": "a", "output": 3}', "output", "must be a string, got int"),
    ('{"id": "a", "output": "x", "finish_reason": "eos"}', "finish_reason", "must be one of"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, field, message):
    f = write(tmp_path / "p.jsonl", {"id": "ok", "output": "SELECT 1;"}, line)
    with pytest.raises(PredictionsError) as exc:
        ReplayBackend(f)
    assert (exc.value.line, exc.value.field) == (2, field)
    assert str(exc.value).startswith(f"{f}:2: ")
    assert message in str(exc.value)


def test_duplicate_ids(tmp_path):
    f = write(tmp_path / "p.jsonl", {"id": "a", "output": "1"}, {"id": "b", "output": "2"}, {"id": "a", "output": "3"})
    with pytest.raises(PredictionsError, match=r"p.jsonl:3: field 'id' duplicate id 'a' \(first on line 1\)"):
        ReplayBackend(f)


def test_missing_file(tmp_path):
    with pytest.raises(ModelBackendError, match="does not exist"):
        ReplayBackend(tmp_path / "none.jsonl")
