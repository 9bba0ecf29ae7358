"""The whole pipeline on the mini benchmark with replayed outputs and a real throwaway PostGIS."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.pipeline import EvalConfig, evaluate
from harness.report.records import load_run
from harness.scoring.status import FLAGS, Status

from .conftest import MINI

SEED_LOOP = ('SELECT COUNT(*) as "数量" FROM rfgcpy WHERE geom AND ssqx AND name AND jsdw AND jsskwsd AND tyaqpjdj '
             'AND jgsj is not null AND geom AND ssqx AND name AND jsdw AND jsskwsd AND tyaqpjdj AND jgsj is not null '
             'AND geom AND ssqx AND name AND jsdw AND jsskwsd AND tyaqpjdj AND jgsj is not null AND geom AND ssqx AND '
             'name AND jsdw AND jsskwsd AND tya')

PREDICTIONS = [
    {"id": "count-near", "output": "```sql\nSELECT count(*) FROM rfgcpy, aipoi p WHERE p.name='市民中心站' AND "
                                   "ST_DWithin(rfgcpy.geom::geography, p.geom::geography, 500);\n```\n这个查询..."},
    {"id": "by-district", "output": SEED_LOOP, "finish_reason": "length"},
    {"id": "largest", "output": "### Answer:\nSELECT name FROM rfgcpy ORDER BY mj DESC LIMIT 2;"},
    {"id": "names", "output": "SELECT name FROM rfgcpy WHERE ssqx LIKE '西湖%'; DROP TABLE rfgcpy;"},
    {"id": "in-district", "output": "SELECT r.name FROM rfgcpy r WHERE ST_DWithin(r.geom, "
                                    "ST_SetSRID(ST_MakePoint(116.39, 39.91), 4326), 0.05);"},
    {"id": "broken-gold", "output": "SELECT 1;"},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, pg_server):
    tmp = tmp_path_factory.mktemp("pipeline")
    preds = tmp / "pred.jsonl"
    preds.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in PREDICTIONS) + "\n", encoding="utf-8")
    # db=local here exercises provisioning end to end (a second cluster beside the session's one)
    return evaluate(EvalConfig(benchmark=MINI, split="test", model=f"replay:{preds}", db="local", out=tmp / "run",
                               use_cache=False, progress=False))


def by_id(run):
    return {i.id: i for i in run.items}


def test_statuses_and_flags(run):
    items = by_id(run)
    assert items["count-near"].status == "correct"
    assert items["count-near"].predicted_sql.startswith("SELECT count(*)")
    seed = items["by-district"]
    assert seed.status == "degenerate"
    assert {"degenerate", "truncated", "unknown_column"} <= set(seed.flags)
    assert "jsdw" in seed.flag_details["unknown_column"]
    assert items["largest"].status == "wrong_result"  # NULLs sort first in DESC: the gold filters them
    assert "order matters" in items["largest"].diff
    # only the first statement is taken; the DROP after it is never sent
    assert items["names"].status == "correct" and items["names"].exact_match is True
    assert items["in-district"].status == "wrong_result"
    assert "invented_literal" in items["in-district"].flags
    assert items["broken-gold"].status == "gold_error" and items["broken-gold"].execution_match is None


def test_summary_excludes_gold_errors(run):
    s = run.summary
    assert s.n == 6 and s.n_scored == 5
    assert s.execution_accuracy == pytest.approx(2 / 5)
    assert s.status_counts["gold_error"] == 1 and s.status_counts["degenerate"] == 1
    assert s.fixture_intact is True
    assert s.variants == 2
    assert s.by_tag["spatial_distance"].execution_accuracy == 1.0
    assert len(s.benchmark_sha256) == 64 and s.versions["sqlglot"]


def test_run_directory_round_trips(run):
    loaded = load_run(run.out)
    assert loaded.summary == run.summary
    assert [i.id for i in loaded.items] == [i.id for i in run.items]
    assert (run.out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not (run.out / "results.jsonl.partial").exists()


def test_test_suite_execution_catches_a_coincidental_match(tmp_path, pg_server):
    """On v1 all 上城区 works are within 500 m of 市民中心站; on v2 one is not. A prediction that
    counts by district instead of by distance matches v1 only, and is wrong."""
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "count-near", "output": "SELECT count(*) FROM rfgcpy WHERE ssqx = '上城区'"},
                                ensure_ascii=False) + "\n", encoding="utf-8")
    result = evaluate(EvalConfig(benchmark=MINI, model=f"replay:{preds}", db="local", out=tmp_path / "r",
                                 use_cache=False, progress=False, ids=frozenset({"count-near"})))
    (item,) = result.items
    assert item.variants_total == 2
    assert item.variants_matched == 1
    assert item.status == "wrong_result"


def test_unwritable_output_fails_before_generation(tmp_path):
    from harness.errors import OutputDirError
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="cannot write to output directory"):
        evaluate(EvalConfig(benchmark=MINI, model="replay:/nonexistent.jsonl", db="local", out=blocker / "sub",
                            use_cache=False, progress=False))


def test_replayed_outputs_are_not_cached_by_prompt(tmp_path):
    """Two questions with the same text may have different recorded outputs: replay is never cached."""
    from harness.models.replay import ReplayBackend
    from harness.pipeline import build_backend
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "a", "output": "SELECT 1"}\n', encoding="utf-8")
    backend = build_backend(EvalConfig(benchmark=MINI, model=f"replay:{preds}", cache_dir=tmp_path / "c"))
    assert isinstance(backend, ReplayBackend)


def test_api_cost_is_summed_and_scaled_per_1000(tmp_path):
    from harness.benchmark.loader import load_benchmark
    from harness.report.records import ItemResult
    from harness.report.summary import summarise
    items = [ItemResult(id=str(i), question="q", gold_sql="SELECT 1", raw_output="", predicted_sql=None,
                        status="no_sql", execution_match=False, execution_match_superset=False, exact_match=False,
                        cost_cny=0.002) for i in range(4)]
    s = summarise(items, benchmark=load_benchmark(MINI, "test"), model="openai:qwen-plus", generation_seconds=2.0)
    assert s.cost_cny == pytest.approx(0.008)
    assert s.cost_cny_per_1k_questions == pytest.approx(2.0)
    assert s.generation_seconds_per_1k_questions == pytest.approx(500.0)


# --- golds: every alternative tried, the report names the gold it describes ------------------------

GOLD_QUESTIONS = [
    # the prediction matches only the second gold: every alternative must be tried
    {"id": "second-gold", "answer": ["SELECT name FROM rfgcpy WHERE ssqx = '拱墅区'",
                                     "SELECT name FROM rfgcpy WHERE ssqx = '西湖区'"],
     "output": "SELECT name FROM rfgcpy WHERE ssqx = '西湖区';"},
    # matches gold 2 on data/v1.sql only, golds 1 and 3 nowhere: reported against gold 2
    {"id": "closest-gold", "answer": ["SELECT id FROM rfgcpy WHERE id > 100",
                                      "SELECT id FROM rfgcpy WHERE ssqx = '上城区'",
                                      "SELECT id FROM rfgcpy WHERE id > 200"],
     "output": "SELECT id FROM rfgcpy WHERE id IN (1, 2);"},
    # runs on data/v1.sql (id 4 exists), divides by zero on data/v2.sql
    {"id": "gold-fails-on-v2", "answer": "SELECT 1 / (SELECT count(*) FROM rfgcpy WHERE id = 4)",
     "output": "SELECT 1;"},
    # order comes from the gold's syntax tree, never from the prediction's
    {"id": "unordered-gold", "answer": "SELECT id FROM rfgcpy WHERE id < 4",
     "output": "SELECT id FROM rfgcpy WHERE id < 4 ORDER BY id DESC;"},
    {"id": "ordered-gold", "answer": "SELECT id FROM rfgcpy WHERE id < 4 ORDER BY id",
     "output": "SELECT id FROM rfgcpy WHERE id < 4 ORDER BY id DESC;"},
]


def _benchmark(root, questions, *, data_in_schema=False):
    """A benchmark directory: the mini schema and data variants, or one schema.sql holding the data."""
    root.mkdir()
    if data_in_schema:
        (root / "schema.sql").write_text("CREATE TABLE t (id integer);\nINSERT INTO t VALUES (1), (2);\n",
                                         encoding="utf-8")
    else:
        shutil.copy(MINI / "schema.sql", root / "schema.sql")
        shutil.copytree(MINI / "data", root / "data")
    lines = [json.dumps({"id": q["id"], "question": f"问题 {q['id']}", "answer": q["answer"]}, ensure_ascii=False)
             for q in questions]
    (root / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    preds = root.parent / f"{root.name}-pred.jsonl"
    preds.write_text("".join(json.dumps({"id": q["id"], "output": q["output"]}, ensure_ascii=False) + "\n"
                             for q in questions), encoding="utf-8")
    return root, preds


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory, pg_server):
    bench, preds = _benchmark(tmp_path_factory.mktemp("golds") / "bench", GOLD_QUESTIONS)
    result = evaluate(EvalConfig(benchmark=bench, model=f"replay:{preds}", db="local", out=bench.parent / "run",
                                 use_cache=False, progress=False))
    return by_id(result)


def test_every_alternative_gold_is_tried(gold_run):
    item = gold_run["second-gold"]
    assert item.status == "correct", item.diff
    assert item.gold_sql == GOLD_QUESTIONS[0]["answer"][1]


def test_wrong_result_is_reported_against_the_closest_gold(gold_run):
    item = gold_run["closest-gold"]
    assert item.status == "wrong_result"
    assert item.variants_matched == 1 and item.variants_total == 2
    assert item.gold_sql == GOLD_QUESTIONS[1]["answer"][1]  # the gold the diff describes, not the first
    assert item.diff.startswith("[data/v2.sql] ")
    assert "against gold 2, the closest of 3 alternative golds tried" in item.error


def test_a_gold_failing_on_the_second_variant_only_is_a_gold_error(gold_run):
    item = gold_run["gold-fails-on-v2"]
    assert item.status == "gold_error" and item.execution_match is None
    assert item.error.startswith("gold failed on data/v2.sql (exec_error, SQLSTATE 22012)")


def test_row_order_is_decided_by_the_gold_not_the_prediction(gold_run):
    assert gold_run["unordered-gold"].status == "correct"
    assert gold_run["ordered-gold"].status == "wrong_result"
    assert "order matters" in gold_run["ordered-gold"].diff


def test_data_in_schema_sql_is_named_so_in_diffs(tmp_path, pg_server):
    question = {"id": "q", "answer": "SELECT id FROM t", "output": "SELECT id + 1 FROM t;"}
    bench, preds = _benchmark(tmp_path / "schema-only", [question], data_in_schema=True)
    result = evaluate(EvalConfig(benchmark=bench, model=f"replay:{preds}", db="local", out=tmp_path / "run",
                                 use_cache=False, progress=False))
    (item,) = result.items
    assert item.status == "wrong_result"
    assert item.diff.startswith("[schema.sql] row values differ")
    assert "[empty]" not in item.diff


# --- the prediction is parsed once, and that tree is what the later stages read -------------------

def test_the_prediction_is_parsed_once_and_that_tree_reaches_every_stage(monkeypatch, mini_fixtures, pg_server):
    """The schema check (diagnose), the guard (through the executor) and exact match all receive the one
    tree the scorer parsed, so none of them parses the prediction again; a gold too is parsed once, and
    that tree reaches the guard on every data variant and exact match."""
    import harness.scoring.scorer as scorer_module
    from harness.db.executor import SafeExecutor
    from harness.models.base import Generation
    seen: dict[str, list[object]] = {"parse": [], "diagnose": [], "run": [], "exact": [], "exact_gold": []}
    parsed_text: dict[int, str] = {}

    def spy(name, original):
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            seen[name].append(result if name == "parse" else kwargs.get("parsed"))
            if name == "parse":
                parsed_text[id(result)] = args[0]
            if name == "exact":
                seen["exact_gold"].append((args[0], kwargs.get("gold_parsed")))
            return result
        return wrapper

    for name in ("parse_statement", "diagnose", "exact_match"):
        key = {"parse_statement": "parse", "diagnose": "diagnose", "exact_match": "exact"}[name]
        monkeypatch.setattr(scorer_module, name, spy(key, getattr(scorer_module, name)))
    monkeypatch.setattr(SafeExecutor, "run", spy("run", SafeExecutor.run))
    scorer = scorer_module.Scorer(pg_server, mini_fixtures, scorer_module.ScorerOptions())
    question = next(q for q in mini_fixtures.benchmark.questions if q.id == "names")
    prediction = "SELECT name FROM rfgcpy WHERE ssqx LIKE '西湖%';"
    try:
        item = scorer.score(question, Generation("names", prediction))
    finally:
        scorer.close()
    assert item.status == "correct" and item.exact_match is True
    by_text = {parsed_text[id(t)]: t for t in seen["parse"]}
    sql = prediction.rstrip(";")  # as extracted
    assert len(question.golds) == 2 and len(seen["parse"]) == len(by_text) == 3
    assert set(by_text) == {sql, *question.golds}
    tree = by_text[sql]
    assert all(t is not None for t in by_text.values())
    assert seen["diagnose"] == [tree] and seen["exact"] and all(t is tree for t in seen["exact"])
    for text, parsed in by_text.items():  # the prediction and each gold, once per data variant
        assert [t is parsed for t in seen["run"]].count(True) == 2, text
    assert seen["exact_gold"] and all(tree is by_text[gold] for gold, tree in seen["exact_gold"])


def test_golds_share_a_session_per_variant_and_predictions_never_do(monkeypatch, mini_fixtures, pg_server):
    """Sessions opened while scoring: one per data variant for all the golds, one per predicted query."""
    import harness.scoring.scorer as scorer_module
    from harness.db.executor import SafeExecutor
    from harness.models.base import Generation
    opened: list[bool] = []
    connect = SafeExecutor._connect

    def counted(self):
        opened.append(self.shared_session)
        return connect(self)
    monkeypatch.setattr(SafeExecutor, "_connect", counted)
    scorer = scorer_module.Scorer(pg_server, mini_fixtures, scorer_module.ScorerOptions())
    questions = [q for q in mini_fixtures.benchmark.questions if q.id != "broken-gold"]
    try:
        items = [scorer.score(q, Generation(q.id, "SELECT count(*) FROM rfgcpy;")) for q in questions]
    finally:
        scorer.close()
    variants = len(mini_fixtures.variants("default"))
    gold_runs = sum(len(q.golds) for q in questions) * variants
    predicted_runs = sum(i.status != "exec_error" for i in items) * variants
    assert gold_runs > variants and opened.count(True) == variants
    assert opened.count(False) >= predicted_runs  # each predicted query's own session (+ a spare waiting)


# --- the database is prepared beside the model load ------------------------------------------------

@pytest.fixture()
def cluster_dir(monkeypatch):
    """This test's local clusters (TXT2SQL_TMPDIR), where the ``postgres`` OS user can reach them."""
    import os
    import tempfile
    from pathlib import Path
    root = Path(tempfile.mkdtemp(prefix="txt2sql-pipeline-"))
    os.chmod(root, 0o755)
    monkeypatch.setenv("TXT2SQL_TMPDIR", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _replay_config(tmp_path, db: str = "local") -> EvalConfig:
    preds = tmp_path / "pred.jsonl"
    preds.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PREDICTIONS), encoding="utf-8")
    return EvalConfig(benchmark=MINI, split="test", model=f"replay:{preds}", db=db, out=tmp_path / "run",
                      use_cache=False, progress=False)


def test_every_stage_is_timed(run):
    assert set(run.stages) == {"model load", "wait for databases", "generate", "score", "checksums", "summary",
                               "report", "databases", "teardown"}
    assert all(seconds >= 0 for seconds in run.stages.values())
    assert run.summary.generation_seconds == round(run.stages["generate"], 3)


def test_the_model_loads_while_the_database_is_prepared(tmp_path, cluster_dir, monkeypatch):
    import threading
    import time

    import harness.pipeline as pipeline
    build = pipeline.build_backend
    beside: list[bool] = []

    def slow_build(config):
        time.sleep(0.3)  # the server is still starting: its thread runs now
        beside.append(any(t.name == "txt2sql-databases" and t.is_alive() for t in threading.enumerate()))
        return build(config)
    monkeypatch.setattr(pipeline, "build_backend", slow_build)
    result = evaluate(_replay_config(tmp_path))
    assert beside == [True]
    assert by_id(result)["count-near"].status == "correct" and result.summary.fixture_intact is True
    assert result.stages["databases"] > result.stages["wait for databases"]


def test_a_database_that_cannot_be_provisioned_stops_the_run_before_generation(tmp_path, monkeypatch):
    """The same error as before the preparation moved to a thread, raised before any generation; the
    model that was loaded meanwhile is closed."""
    import harness.pipeline as pipeline
    from harness.errors import ProvisionError
    calls: list[str] = []
    build = pipeline.build_backend

    def recorded_build(config):
        backend = build(config)
        close = backend.close

        def recorded_close():
            calls.append("close")
            close()
        backend.close = recorded_close
        return backend
    monkeypatch.setattr(pipeline, "build_backend", recorded_build)
    monkeypatch.setattr(pipeline, "generate", lambda *a, **k: calls.append("generate"))
    with pytest.raises(ProvisionError, match="cannot connect to .*Check host, port and credentials"):
        evaluate(_replay_config(tmp_path, db="postgresql://nobody@127.0.0.1:1/postgres"))
    assert calls == ["close"]


def test_a_generation_failure_still_tears_the_server_down(tmp_path, cluster_dir, monkeypatch):
    import harness.pipeline as pipeline
    from tests.reliability.conftest import server_pids

    def failing_generate(*args, **kwargs):
        assert list(cluster_dir.glob("txt2sql-pg-*")), "the server runs while the model generates"
        raise RuntimeError("the model ran out of memory")
    monkeypatch.setattr(pipeline, "generate", failing_generate)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        evaluate(_replay_config(tmp_path))
    assert not list(cluster_dir.glob("txt2sql-pg-*")) and not server_pids(cluster_dir)


# --- summarise: the rates as the README defines them ----------------------------------------------

def test_degenerate_rate_counts_flag_only_items():
    from harness.benchmark.loader import load_benchmark
    from harness.report.records import ItemResult
    from harness.report.summary import summarise

    def item(i, status, flags=()):
        scored = status != "gold_error"
        return ItemResult(id=str(i), question="q", gold_sql="SELECT 1", raw_output="", predicted_sql="SELECT 2",
                          status=status, execution_match=(status == "correct") if scored else None,
                          execution_match_superset=None, exact_match=None, flags=tuple(flags))

    items = [item(1, "degenerate", ["degenerate"]), item(2, "wrong_result", ["degenerate", "truncated"]),
             item(3, "correct"), item(4, "refused"), item(5, "gold_error", ["degenerate"])]
    s = summarise(items, benchmark=load_benchmark(MINI, "test"), model="replay:x")
    assert s.n_scored == 4
    assert s.degenerate_rate == pytest.approx(2 / 4)  # the status and the flag-only item; gold_error excluded
    assert s.refused_rate == pytest.approx(1 / 4)
    assert s.execution_accuracy == pytest.approx(1 / 4)
    assert list(s.status_counts) == [st.value for st in Status]
    assert s.status_counts["gold_error"] == 1 and s.flag_counts == {"degenerate": 3, "truncated": 1}


def test_one_status_vocabulary():
    from typing import get_args

    from harness.db import executor
    from harness.report import records
    from harness.scoring.status import STATUSES, ExecStatus
    assert records.STATUSES is STATUSES and records.Status is Status and executor.ExecStatus is ExecStatus
    assert STATUSES == tuple(s.value for s in Status)
    assert set(get_args(ExecStatus)) - {"ok"} <= set(STATUSES)  # an execution's failure is the item's status
    assert "backend_error" in FLAGS
    assert all(s.style and s.color.startswith("#") for s in Status)


def test_the_model_loads_with_the_collector_paused_and_the_run_restores_it(tmp_path, cluster_dir, monkeypatch):
    import gc

    import harness.pipeline as pipeline
    build = pipeline.build_backend
    during: list[bool] = []

    def watched_build(config):
        during.append(gc.isenabled())
        return build(config)
    monkeypatch.setattr(pipeline, "build_backend", watched_build)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    result = evaluate(_replay_config(tmp_path))
    assert during == [False]
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert by_id(result)["count-near"].status == "correct"


def test_the_report_is_rendered_by_its_process_while_the_checksums_run(tmp_path, cluster_dir, monkeypatch):
    import harness.pipeline as pipeline
    from harness.db.fixture import FixtureDatabases
    from harness.report.html import render_run_html
    from harness.report.records import Run
    checksums, background = FixtureDatabases.checksums, pipeline.BackgroundReport
    events: list[str] = []

    def watched_checksums(self):
        events.append("checksums")
        return checksums(self)

    class Watched(background):
        def render(self, summary):
            events.append("render")
            super().render(summary)

        def install(self, summary):
            installed = super().install(summary)
            events.append(f"installed={installed}")
            return installed
    monkeypatch.setattr(FixtureDatabases, "checksums", watched_checksums)
    monkeypatch.setattr(pipeline, "BackgroundReport", Watched)
    result = evaluate(_replay_config(tmp_path))
    # the preparation checksums before any query; the page is sent off before the second checksum
    assert events == ["checksums", "render", "checksums", "installed=True"]
    assert (result.out / "report.html").read_text(encoding="utf-8") == render_run_html(
        Run(result.out, result.summary, result.items))
