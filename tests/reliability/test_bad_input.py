"""Bad input ends in a clear error, never a crash: the benchmark loader and the predictions reader raise
their own errors (naming file and line) or load; SQL extraction never raises. An unwritable or full
output directory fails before any generation. Two evaluations at once on one machine don't collide.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.benchmark.loader import load_benchmark
from harness.errors import BenchmarkError, OutputDirError, PredictionsError
from harness.models.base import FinishReason
from harness.models.replay import read_predictions
from harness.pipeline import EvalConfig, evaluate
from harness.sql.extract import Extracted, extract_sql
from tests.conftest import MINI, REPO
from tests.reliability.conftest import EXPECTED, cli_argv, cli_env, server_pids, verdicts
from tests.reliability.counted_backend import CountedBackend

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DEEP_JSON = b"[" * 100_000
FIELDS = ("id", "question", "answer", "context", "db", "tags", "difficulty", "output", "finish_reason",
          "tokens_in", "tokens_out")
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3),
                           max_leaves=8)
json_lines = st.lists(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=7) | json_values,
                      min_size=0, max_size=5).map(
    lambda objs: "\n".join(json.dumps(o, ensure_ascii=False) for o in objs).encode("utf-8"))


@pytest.fixture(scope="module")
def bench_dir() -> Iterator[Path]:
    """A benchmark directory whose split file each example overwrites (hypothesis reuses the fixture)."""
    root = Path(tempfile.mkdtemp(prefix="txt2sql-fuzz-"))
    shutil.copy(MINI / "schema.sql", root / "schema.sql")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _load_or_benchmark_error(root: Path, content: bytes) -> None:
    (root / "test.jsonl").write_bytes(content)
    try:
        bench = load_benchmark(root, "test")
    except BenchmarkError as exc:
        assert str(exc).startswith(str(root / "test.jsonl")), exc  # the error names the file
        return
    assert bench.questions


# --- benchmark loader --------------------------------------------------------------------------------
@FUZZ
@given(content=json_lines)
def test_loader_fuzzed_json_lines_load_or_raise_benchmark_error(bench_dir, content):
    _load_or_benchmark_error(bench_dir, content)


@FUZZ
@given(content=st.text(max_size=300).map(lambda t: t.encode("utf-8")))
def test_loader_fuzzed_utf8_text_loads_or_raises_benchmark_error(bench_dir, content):
    _load_or_benchmark_error(bench_dir, content)


@FUZZ
@given(content=st.binary(max_size=300))
@example(content=b"\xff\xfe{}")
@example(content=DEEP_JSON)
def test_loader_fuzzed_bytes_load_or_raise_benchmark_error(bench_dir, content):
    _load_or_benchmark_error(bench_dir, content)


# --- predictions reader ------------------------------------------------------------------------------
def _read_or_predictions_error(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        read_predictions(path)
    except PredictionsError as exc:
        assert str(exc).startswith(str(path)), exc


valid_predictions = st.lists(
    st.fixed_dictionaries({"id": st.text(max_size=5) | st.integers(), "output": st.text(max_size=40)},
                          optional={"finish_reason": st.sampled_from(sorted(get_args(FinishReason))),
                                    "tokens_in": st.integers(0, 10**6), "tokens_out": st.none() | st.integers(0, 99),
                                    "extra": json_values}),
    max_size=5, unique_by=lambda o: str(o["id"]))


@FUZZ
@given(objs=valid_predictions)
@example(objs=[{"id": 1, "output": "SELECT 1;\u2028 -- a line separator inside the output"}])
def test_predictions_reader_reads_every_valid_file(bench_dir, objs):
    """Valid input (unique ids, string outputs, a known finish_reason, non-negative counts, any extra
    keys) always reads, and reads back exactly what was written: no error is acceptable here."""
    path = bench_dir / "pred.jsonl"
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    got = read_predictions(path)
    assert {k: g.text for k, g in got.items()} == {str(o["id"]): o["output"] for o in objs}
    assert all(got[str(o["id"])].finish_reason == o.get("finish_reason", "stop") for o in objs)


@FUZZ
@given(content=st.binary(max_size=200) | json_lines)
@example(content=b'{"id": 1, "output": "x", "tokens_in": "abc"}')
@example(content=b'{"id": 1, "output": "x", "finish_reason": []}')
@example(content=DEEP_JSON)
def test_predictions_reader_fuzzed_input_reads_or_raises_predictions_error(bench_dir, content):
    _read_or_predictions_error(bench_dir / "pred.jsonl", content)


# --- extraction --------------------------------------------------------------------------------------
sqlish = st.lists(st.sampled_from(list("SELECT FROM WHERE ;'\"$`#*()\n\t-/abc123_") +
                                  ["```", "```sql", "$$", "$x$", "/*", "*/", "--", "### Answer:", "SELECT ", " FROM t",
                                   "E'\\'", "U&'", "查询", "\u2028"]), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=400) | sqlish)
@example(raw="SELECT " + "(" * 5000 + "1" + ")" * 5000)
@example(raw="```sql\nSELECT $$ unterminated")
@example(raw="/* never closed SELECT 1")
def test_extract_sql_never_raises(raw):
    out = extract_sql(raw)
    assert isinstance(out, Extracted)
    assert out.sql is None or out.sql.strip()


# --- output directory --------------------------------------------------------------------------------
@pytest.fixture()
def tmpfs(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only; skipped where mount is not permitted)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate a full disk: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


def _never_generates(tmp_path: Path, out: Path) -> CountedBackend:
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"id": "names", "output": "SELECT 1"}\n', encoding="utf-8")
    backend = CountedBackend(pred, f"counted:{pred}", None, 0.0)
    with pytest.raises(OutputDirError, match="cannot write to output directory"):
        evaluate(EvalConfig(benchmark=MINI, model=backend.spec, db="local", out=out, use_cache=False,
                            progress=False), backend=backend)
    return backend


def test_full_disk_fails_before_generation(tmp_path, tmpfs):
    _fill(tmpfs)
    backend = _never_generates(tmp_path, tmpfs / "run")
    assert backend.calls == 0


def test_read_only_output_fails_before_generation(tmp_path, tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True, capture_output=True)
    backend = _never_generates(tmp_path, tmpfs / "run")
    assert backend.calls == 0


def test_output_path_under_a_file_fails_before_generation(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _never_generates(tmp_path, blocker / "run").calls == 0


# --- two evaluations at once -------------------------------------------------------------------------
def test_two_concurrent_evaluations_do_not_collide(tmp_path, pg_tmp, predictions):
    """Same machine, same cache dir, same temp dir, both db=local: both finish with the right verdicts,
    and the shared cache holds only whole lines."""
    cache = tmp_path / "cache"
    procs = []
    for name in ("a", "b"):
        env = cli_env(cache=cache, counter=tmp_path / f"count-{name}", tmpdir=pg_tmp, delay=0.2)
        procs.append(subprocess.Popen(cli_argv(f"counted:{predictions}", tmp_path / name), env=env, cwd=REPO,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for name in ("a", "b"):
        assert {k: v[0] for k, v in verdicts(tmp_path / name / "results.jsonl").items()} == EXPECTED
    assert verdicts(tmp_path / "a" / "results.jsonl") == verdicts(tmp_path / "b" / "results.jsonl")
    (cache_file,) = (cache / "generations").glob("*.jsonl")
    rows = [json.loads(line) for line in cache_file.read_text(encoding="utf-8").splitlines()]
    assert {r["id"] for r in rows} == set(EXPECTED)
    assert not server_pids(pg_tmp) and not list(pg_tmp.glob("txt2sql-pg-*"))


def test_lone_surrogate_in_a_prediction_is_an_error_not_a_crash(tmp_path, pg_tmp, monkeypatch):
    """JSON allows "\\ud800", UTF-8 does not: the predictions reader refuses it, naming file, line and
    field, before anything runs (the executor's own exec_error for it is in hostile.tsv)."""
    monkeypatch.setenv("TXT2SQL_TMPDIR", str(pg_tmp))
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"id": "names", "output": "SELECT name FROM rfgcpy WHERE ssqx = \'\\ud800\'"}\n', encoding="utf-8")
    with pytest.raises(PredictionsError, match=r"pred.jsonl:1: field 'output'.*lone surrogate"):
        evaluate(EvalConfig(benchmark=MINI, model=f"replay:{pred}", db="local", out=tmp_path / "run",
                            use_cache=False, progress=False, ids=frozenset({"names"})))
