"""Gold checks for the bundled Hangzhou benchmark, through the harness's own executor and scorer."""

from __future__ import annotations

import json

import pytest
import sqlglot

from harness.benchmark.loader import load_benchmark
from harness.db.executor import SafeExecutor
from harness.db.fixture import FixtureDatabases
from harness.scoring.execution import execution_match
from harness.scoring.normalise import gold_is_ordered
from tests.conftest import REPO

HANGZHOU = REPO / "fixtures" / "hangzhou"
TAGS = {"aggregate", "filter", "join", "group_by", "order_limit", "spatial_distance", "spatial_containment",
        "spatial_measure", "nested", "date"}


@pytest.fixture(scope="module")
def hz(pg_server):
    bench = load_benchmark(HANGZHOU, "test")
    with FixtureDatabases(pg_server, bench, statement_timeout_ms=20000) as fx:
        executors = [SafeExecutor(fx.reader(v), statement_timeout_ms=20000) for v in fx.variants("default")]
        # without its WHERE a join becomes a cross product: a quick timeout already proves "different"
        quick = SafeExecutor(fx.reader(fx.variants("default")[0]), statement_timeout_ms=1000, row_cap=20000)
        yield fx, executors, quick
        for ex in [*executors, quick]:
            ex.close()


def golds(split: str) -> list:
    return list(load_benchmark(HANGZHOU, split).questions)


def without_where(sql: str) -> str | None:
    tree = sqlglot.parse_one(sql, read="postgres")
    if tree.args.get("where") is None:
        return None
    tree = tree.copy()
    tree.set("where", None)
    return tree.sql(dialect="postgres")


def check_split(split: str, executors, quick) -> None:
    problems = []
    for q in golds(split):
        for ex in executors:
            run = ex.run(q.gold)
            if run.status != "ok" or not run.result.rows:
                problems.append(f"{q.id} on {ex.info.dbname}: {run.status} {run.error} rows="
                                f"{len(run.result.rows) if run.result else '-'}")
        stripped = without_where(q.gold)
        if stripped is not None:
            full, bare = executors[0].run(q.gold), quick.run(stripped)
            if bare.status == "ok" and execution_match(full.result, bare.result, ordered=gold_is_ordered(q.gold)).match:
                problems.append(f"{q.id}: trivially satisfiable (same result without its WHERE)")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("split", ["test", "dev"])
def test_golds_run_nonempty_on_every_variant_and_are_not_trivial(hz, split):
    _, executors, quick = hz
    assert len(executors) >= 3
    check_split(split, executors, quick)


@pytest.mark.slow
def test_train_golds_run_nonempty_on_every_variant(hz):
    check_split("train", hz[1], hz[2])


def test_split_sizes_tags_and_seed_questions():
    test, dev, train = golds("test"), golds("dev"), golds("train")
    assert len(test) >= 150 and len(dev) >= 50 and len(train) >= 3000
    assert all(q.tags and set(q.tags) <= TAGS and q.difficulty for q in test + dev)
    assert {t for q in test for t in q.tags} == TAGS
    texts = {q.question for q in test}
    assert "杭州市长输管线管龄在20-30年的有多长" in texts
    assert "查一下市民中心站附近500米的人防工程的数量" in texts


def test_no_question_in_two_splits_and_templates_are_disjoint():
    def read(split):
        return [json.loads(line) for line in (HANGZHOU / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    splits = {s: read(s) for s in ("test", "dev", "train")}
    questions = {s: {r["question"] for r in rows} for s, rows in splits.items()}
    templates = {s: {r.get("template") for r in rows} for s, rows in splits.items()}
    for a, b in (("test", "dev"), ("test", "train"), ("dev", "train")):
        assert not questions[a] & questions[b], f"questions shared by {a} and {b}"
        assert not templates[a] & templates[b], f"templates shared by {a} and {b}"


def test_replayed_golds_score_100_percent_on_every_variant(tmp_path, pg_server):
    from harness.pipeline import EvalConfig, evaluate
    preds = tmp_path / "golds.jsonl"
    preds.write_text("".join(json.dumps({"id": q.id, "output": q.gold}, ensure_ascii=False) + "\n"
                             for q in golds("test")), encoding="utf-8")
    result = evaluate(EvalConfig(benchmark=HANGZHOU, split="test", model=f"replay:{preds}", db="local",
                                 out=tmp_path / "run", use_cache=False, progress=False))
    assert result.summary.n == len(golds("test"))
    assert result.summary.execution_accuracy == 1.0
    assert all(i.variants_matched == i.variants_total >= 3 for i in result.items)
    assert result.summary.fixture_intact is True


@pytest.mark.parametrize("split", ["test", "dev"])
def test_context_holds_exactly_the_tables_of_the_gold(split):
    import re

    from sqlglot import exp
    bad = []
    for q in golds(split):
        in_context = set(re.findall(r"CREATE TABLE (\w+)", q.context))
        cte = {c.alias_or_name for c in sqlglot.parse_one(q.gold, read="postgres").find_all(exp.CTE)}
        in_gold = {t.name for t in sqlglot.parse_one(q.gold, read="postgres").find_all(exp.Table)} - cte
        if in_context != in_gold:
            bad.append(f"{q.id}: context {sorted(in_context)} vs gold {sorted(in_gold)}")
    assert not bad, "\n".join(bad[:10])
