"""The whole pipeline on the mini benchmark with replayed outputs and a real throwaway PostGIS."""

from __future__ import annotations

import json

import pytest

from harness.pipeline import EvalConfig, evaluate
from harness.report.records import load_run

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
