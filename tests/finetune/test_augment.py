"""Schema-grounding examples (harness/finetune/augment.py): read from the DDL, valid on the database, and
never shaped like a scored split's gold."""

from __future__ import annotations

import pytest

from harness.benchmark.loader import load_benchmark
from harness.benchmark.model import Question
from harness.db.executor import SafeExecutor
from harness.db.fixture import FixtureDatabases
from harness.finetune.augment import parse_tables, schema_questions, sql_pattern, train_values
from harness.sql.schema import SchemaCatalog, check_identifiers
from tests.conftest import REPO

HANGZHOU = REPO / "fixtures" / "hangzhou"
DDL = """CREATE TABLE gxssln ( -- 长输管线
    id integer PRIMARY KEY, -- 主键
    name varchar(50), -- 管线名称（同一管线的多个管段名称相同）
    material varchar(20), -- 管材：钢管、PE管、球墨铸铁管
    pressure numeric(5,2), -- 设计压力（MPa），可能为空
    jssj date, -- 建设时间
    geom geometry(LineString,4326) -- 管线几何（WGS84）
);"""


@pytest.fixture(scope="module")
def train() -> list[Question]:
    return list(load_benchmark(HANGZHOU, "train").questions)


def test_columns_are_read_from_the_ddl_comments():
    (table,) = parse_tables(DDL)
    assert (table.name, table.label) == ("gxssln", "长输管线")
    cols = {c.name: c for c in table.columns}
    assert [c.name for c in table.columns] == ["id", "name", "material", "pressure", "jssj", "geom"]
    assert cols["material"].label == "管材" and cols["material"].listed_values == ("钢管", "PE管", "球墨铸铁管")
    assert cols["pressure"].label == "设计压力" and cols["pressure"].nullable and cols["pressure"].kind == "number"
    assert not cols["jssj"].nullable and cols["jssj"].kind == "date"
    assert (cols["id"].kind, cols["geom"].kind, cols["name"].kind) == ("key", "geometry", "text")
    assert table.name_column is not None and table.name_column.name == "name"


def test_comment_on_statements_name_tables_and_columns():
    """PostgreSQL's own comments (``COMMENT ON``) serve as well as trailing ``--`` ones; a column nobody
    commented gets no questions, since a question could only repeat its identifier."""
    ddl = ("CREATE TABLE road (\n    id integer PRIMARY KEY,\n    grade text,\n    lanes integer,\n"
           "    geom geometry(LineString, 4326),\n    PRIMARY KEY (id)\n);\n"
           "COMMENT ON TABLE road IS '道路';\nCOMMENT ON COLUMN road.grade IS '道路等级：主干路、次干路、支路';")
    (table,) = parse_tables(ddl)
    assert (table.name, table.label) == ("road", "道路")
    assert [c.name for c in table.columns] == ["id", "grade", "lanes", "geom"]
    assert table.columns[1].listed_values == ("主干路", "次干路", "支路") and table.columns[2].label == ""
    assert "COMMENT ON COLUMN road.grade" in table.ddl
    q = Question("q", "x", ("SELECT COUNT(*) FROM road;",), ddl)
    golds = [g.gold for g in schema_questions([q])]
    assert "SELECT COUNT(*) AS cnt FROM road WHERE grade = '支路';" in golds
    assert not [g for g in golds if "lanes" in g]


def test_sql_pattern_masks_literals_only():
    a = "SELECT COUNT(*) AS cnt FROM gxssln WHERE gl > 30 AND status = '在用';"
    b = "select count(*) as cnt from gxssln where gl > 12.5 and status = '废弃'"
    assert sql_pattern(a) == sql_pattern(b)
    assert sql_pattern(a) != sql_pattern(a.replace("gl >", "gl <"))
    assert sql_pattern("SELECT name FROM road LIMIT 5") != sql_pattern("SELECT name2 FROM road LIMIT 5")
    # one template whatever the order of its conditions and its aliases (exact match's shape)
    assert sql_pattern("SELECT COUNT(*) AS cnt FROM t WHERE a IS NULL AND b = 'x'") == sql_pattern(
        "select count(*) as n from t where b = 'y' and a is null;")


def test_train_values_come_from_single_table_golds(train):
    values = train_values(train)
    assert "上城区" in values[("rfgcpy", "ssqx")]
    assert all(len(k) == 2 for k in values)


def test_every_example_names_only_columns_of_its_table_and_parses(train):
    qs = schema_questions(train)
    assert len(qs) > 300
    for q in qs:
        catalog = SchemaCatalog.from_ddl(q.context)
        check = check_identifiers(q.gold, catalog)
        assert check.ok, (q.question, q.gold, check)
        assert q.context.startswith("CREATE TABLE") and q.source.startswith("schema-augment")
    assert len({q.question for q in qs}) == len(qs)


def test_examples_shaped_like_a_scored_gold_are_left_out(train):
    everything = schema_questions(train)
    target = next(q.gold for q in everything if "'" in q.gold)
    banned = target.replace("'", "'x", 1)  # another literal, the same template
    kept = schema_questions(train, exclude=[banned])
    assert banned != target and sql_pattern(target) not in {sql_pattern(q.gold) for q in kept}
    assert len(kept) < len(everything)
    scored = [g for s in ("dev", "test") for q in load_benchmark(HANGZHOU, s).questions for g in q.golds]
    patterns = {sql_pattern(g) for g in scored}
    assert not [q.gold for q in schema_questions(train, exclude=scored) if sql_pattern(q.gold) in patterns]


def test_rounds_add_new_wordings_and_each_run_is_reproducible(train):
    one, two = schema_questions(train), schema_questions(train, rounds=2)
    assert [q.question for q in two] == [q.question for q in schema_questions(train, rounds=2)]
    assert [q.question for q in two[:len(one)]] == [q.question for q in one]  # round 0 comes first, unchanged
    assert len(two) > len(one) and len({q.question for q in two}) == len(two)
    assert {q.source for q in two} == {"schema-augment:0", "schema-augment:1"}


def test_every_example_runs_on_postgis(pg_server, train):
    """The examples are training targets: each must be a query the database accepts."""
    bench = load_benchmark(HANGZHOU, "test")
    with FixtureDatabases(pg_server, bench, statement_timeout_ms=20000) as fx:
        ex = SafeExecutor(fx.reader(fx.variants("default")[0]), statement_timeout_ms=20000)
        try:
            failed = [(q.gold, run.error) for q in schema_questions(train)
                      for run in [ex.run(q.gold)] if run.status != "ok"]
        finally:
            ex.close()
    assert not failed, failed[:5]
