"""Reading runs back: one loader for the gate and the reports, failing like every other JSON Lines
file of the harness (file, line, what to do)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.benchmark.jsonl import read_jsonl
from harness.errors import BenchmarkError, RunFileError
from harness.models.base import ModelInfo
from harness.report.records import Run, RunInfo, load_run
from tests.runbuilder import from_outcomes, write_run


def _run(tmp_path: Path) -> tuple[Run, Path]:
    run = from_outcomes("101", model="m", path=str(tmp_path / "run"))
    return run, write_run(run, tmp_path / "run")


def test_round_trip(tmp_path: Path) -> None:
    run, d = _run(tmp_path)
    loaded = load_run(d / "summary.json")
    assert loaded.summary == run.summary and loaded.items == run.items


def test_summaries_written_before_the_fingerprint_joined_the_model_still_load(tmp_path: Path) -> None:
    run, d = _run(tmp_path)
    data = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    data["model_fingerprint"] = "f" * 64  # where it stood, beside a run.model without one
    data["run"]["model"].pop("fingerprint")
    (d / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_run(d).summary.run.model == replace(run.summary.run.model, fingerprint="f" * 64)
    del data["run"]  # older still: the run's settings were not recorded
    (d / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_run(d).summary.run == RunInfo(model=ModelInfo("", "", fingerprint="f" * 64))
    assert "not recorded" in load_run(d).summary.run.describe()


def test_a_byte_order_mark_is_read_as_everywhere(tmp_path: Path) -> None:
    run, d = _run(tmp_path)
    for name in ("results.jsonl", "summary.json"):
        (d / name).write_bytes(b"\xef\xbb\xbf" + (d / name).read_bytes())
    assert load_run(d).items == run.items


def test_non_utf8_results_fail_as_for_any_jsonl_file(tmp_path: Path) -> None:
    _, d = _run(tmp_path)
    results = d / "results.jsonl"
    results.write_bytes(results.read_bytes() + '{"id": "坏"}\n'.encode("gbk"))
    with pytest.raises(RunFileError) as ours:
        load_run(d)
    with pytest.raises(BenchmarkError) as shared:
        list(read_jsonl(results))
    assert str(ours.value) == str(shared.value)  # same file, line and wording
    assert ":4:" in str(ours.value) and "not UTF-8" in str(ours.value)


def test_a_bad_record_names_file_and_line(tmp_path: Path) -> None:
    _, d = _run(tmp_path)
    with (d / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"id": "x"}\n')
    with pytest.raises(RunFileError, match=r"results.jsonl:4: not a txt2sql result record"):
        load_run(d)


def test_missing_results_are_an_error_unless_not_required(tmp_path: Path) -> None:
    run, d = _run(tmp_path)
    (d / "results.jsonl").unlink()
    with pytest.raises(RunFileError, match="results.jsonl: not found"):
        load_run(d)
    assert load_run(d, require_results=False) == Run(d, run.summary, ())
