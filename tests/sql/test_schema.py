"""Schema catalog from DDL and identifier checks against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sql.schema import (
    IdentifierCheck,
    SchemaCatalog,
    SchemaParseError,
    check_identifiers,
    parse_error,
)

DDL = (Path(__file__).parent.parent / "diagnose" / "cases" / "schema.sql").read_text(encoding="utf-8")
CAT = SchemaCatalog.from_ddl(DDL)
RFGCPY = {"id", "name", "jldw", "qsdw", "jsskwsd", "ssqx", "tyaqpjdj", "jgsj", "geom"}


def test_catalog_reads_create_table_and_ignores_the_rest() -> None:
    assert set(CAT.tables) == {"rfgcpy", "gxssln", "aipoi"}
    assert CAT.columns("rfgcpy") == RFGCPY


def test_catalog_schema_qualified_views_and_alter() -> None:
    cat = SchemaCatalog.from_ddl(
        'CREATE TABLE public."Road" (Id int, "Name" text);\n'
        "ALTER TABLE public.\"Road\" ADD COLUMN width numeric;\n"
        "CREATE VIEW v_all AS SELECT * FROM \"Road\";\n"
        "CREATE VIEW v_named AS SELECT id, name AS label FROM \"Road\";\n"
        "CREATE INDEX ON \"Road\" (id);")
    assert cat.columns("road") == {"id", "name", "width"}
    assert cat.columns("road", "public") == {"id", "name", "width"}
    assert cat.columns("v_all") is None  # unknown shape: any column accepted
    assert cat.columns("v_named") == {"id", "label"}
    assert check_identifiers("SELECT anything FROM v_all", cat).ok


def test_catalog_bad_create_table_names_the_statement() -> None:
    with pytest.raises(SchemaParseError, match="DDL statement 2"):
        SchemaCatalog.from_ddl("CREATE EXTENSION postgis; CREATE TABLE t (a int;")
    with pytest.raises(SchemaParseError, match="DDL statement 1"):
        SchemaCatalog.from_ddl("CREATE TABLE t a int garbage")


@pytest.mark.parametrize("sql, tables, columns", [
    ('SELECT COUNT(*) as "数量" FROM rfgcpy WHERE geom AND ssqx AND name AND jsdw AND jgsj is not null', (), ("jsdw",)),
    ("SELECT r.jsdw FROM rfgcpy r", (), ("jsdw",)),
    ("SELECT name FROM shelters", ("shelters",), ()),
    ("SELECT p.name FROM aipoi p JOIN metro m ON ST_DWithin(p.geom, m.geom, 500)", ("metro",), ()),
    ("SELECT name FROM rfgcpy WHERE ssqx = \"上城区\"", (), ("上城区",)),  # PostgreSQL reads it as a column too
    ("SELECT g.name FROM gxssln g JOIN aipoi a USING (id) WHERE a.gdlx = 'x'", (), ("gdlx",)),
    ("SELECT id FROM rfgcpy UNION SELECT idx FROM gxssln", (), ("idx",)),
    ("SELECT name FROM rfgcpy WHERE EXISTS (SELECT 1 FROM aipoi a WHERE a.id = rfgcpy.id AND a.kind = 'x')", (), ("kind",)),
])
def test_flags_unknown_names(sql: str, tables: tuple[str, ...], columns: tuple[str, ...]) -> None:
    assert check_identifiers(sql, CAT) == IdentifierCheck(tables, columns, None)


@pytest.mark.parametrize("sql", [
    'SELECT COUNT(*) AS "数量" FROM rfgcpy ORDER BY "数量" DESC',
    "SELECT ssqx, COUNT(*) cnt FROM rfgcpy GROUP BY ssqx HAVING COUNT(*) > 2 ORDER BY cnt",
    "SELECT name FROM aipoi WHERE name LIKE '%jsdw%'",
    "SELECT ST_AsText(geom), ST_Area(geom::geography), ST_X(ST_Centroid(geom)) FROM rfgcpy",
    "SELECT name FROM rfgcpy WHERE ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint(120.2, 30.2), 4326)::geography, 500)",
    "SELECT * FROM rfgcpy",
    "SELECT r.* FROM rfgcpy r",
    "WITH near AS (SELECT id, name AS n FROM aipoi) SELECT near.n, n FROM near",
    "WITH c(a, b) AS (SELECT id, name FROM aipoi) SELECT a, b FROM c",
    "SELECT s.k FROM (SELECT id AS k FROM gxssln) s",
    "SELECT s.anything FROM (SELECT * FROM gxssln) s",
    "SELECT g, x FROM generate_series(1, 3) g, unnest(ARRAY[1, 2]) x",
    "SELECT (ST_Dump(geom)).geom FROM gxssln",
    "SELECT d.path, ST_AsText(d.geom) FROM gxssln, LATERAL ST_Dump(geom) d",
    "SELECT r.name FROM rfgcpy r WHERE r.id IN (SELECT id FROM aipoi WHERE aipoi.name = r.qsdw)",
    "SELECT t.a FROM (VALUES (1)) t(a)",
    "SELECT srid, proj4text FROM spatial_ref_sys",
    "SELECT tablename FROM pg_tables; SELECT column_name FROM information_schema.columns",
    "SELECT rfgcpy FROM rfgcpy",
    "SELECT name FROM public.rfgcpy",
    "SELECT a.name, b.name FROM aipoi a CROSS JOIN LATERAL (SELECT name FROM rfgcpy r ORDER BY r.geom <-> a.geom LIMIT 1) b",
])
def test_no_false_positives(sql: str) -> None:
    assert check_identifiers(sql, CAT) == IdentifierCheck((), (), None)


def test_parse_error_is_reported_not_raised() -> None:
    check = check_identifiers("SELECT name FROM WHERE", CAT)
    assert check.parse_error and not check.unknown_columns
    assert parse_error("SELECT 1") is None


def test_a_pre_parsed_tree_is_used_and_left_unchanged() -> None:
    """``parsed=`` is what the check reads (so the pipeline parses once), and it does not mutate it."""
    import sqlglot

    tree = sqlglot.parse_one("SELECT p.jsdw FROM rfgcpy p JOIN hospital h ON p.id = h.id", read="postgres")
    before = tree.sql(dialect="postgres")
    # the text says something else: only the tree counts
    got = check_identifiers("SELECT name FROM rfgcpy", CAT, parsed=tree)
    assert (got.unknown_tables, got.unknown_columns) == (("hospital",), ("jsdw",))
    assert tree.sql(dialect="postgres") == before
    assert check_identifiers(before, CAT) == got


def test_leading_nested_comments_before_ddl_are_skipped() -> None:
    cat = SchemaCatalog.from_ddl("/* a /* nested */ comment */ -- x\nCREATE TABLE t1 (a int);\n"
                                 "/* CREATE TABLE t2 (b int); */ CREATE TABLE t3 (c int);")
    assert set(cat.tables) == {"t1", "t3"}
