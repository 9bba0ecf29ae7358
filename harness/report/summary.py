"""Aggregate per-question results into a Summary. Every rate's denominator is the scored questions
(gold_error excluded)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.benchmark.model import Benchmark
from harness.report.records import ItemResult, Summary, TagScore
from harness.scoring.status import STATUSES, Status

VERSIONED = ("txt2sql", "torch", "transformers", "peft", "bitsandbytes", "psycopg", "sqlglot", "shapely")


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def server_versions(server: Any, fixtures: Any) -> dict[str, str]:
    from harness.db.server import admin_connection
    try:
        any_db = next(iter(fixtures.databases.values())).dbname
        with admin_connection(server.admin, dbname=any_db) as conn:
            pg = conn.execute("SHOW server_version").fetchone()
            gis = conn.execute("SELECT postgis_lib_version()").fetchone()
        return {"postgresql": str(pg[0]) if pg else "?", "postgis": str(gis[0]) if gis else "?"}
    except Exception:
        return {}


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def summarise(items: Sequence[ItemResult], *, benchmark: Benchmark, model: str,
              fixture_intact: bool | None = None, variants: int = 1, generation_seconds: float = 0.0,
              server: Any = None, admin: Any = None) -> Summary:
    scored = [i for i in items if i.scored]
    n = len(scored)
    statuses = Counter(str(i.status) for i in items)
    flags = Counter(f for i in items for f in i.flags)
    by_tag: dict[str, TagScore] = {}
    for tag in sorted({t for i in scored for t in i.tags}):
        tagged = [i for i in scored if tag in i.tags]
        by_tag[tag] = TagScore(len(tagged), _rate(sum(i.correct for i in tagged), len(tagged)))
    versions = package_versions()
    if server is not None and admin is not None:
        versions.update(server_versions(server, admin))
    priced = [i.cost_cny for i in items if i.cost_cny is not None]
    cost = sum(priced) if priced else None
    return Summary(
        n=len(items), n_scored=n,
        execution_accuracy=_rate(sum(i.correct for i in scored), n),
        execution_accuracy_superset=_rate(sum(bool(i.execution_match_superset) for i in scored), n),
        exact_match=_rate(sum(bool(i.exact_match) for i in scored), n),
        status_counts={s: statuses.get(s, 0) for s in STATUSES},
        flag_counts=dict(sorted(flags.items())),
        by_tag=by_tag, fixture_intact=fixture_intact,
        benchmark=str(benchmark.path), benchmark_sha256=benchmark.sha256, split=benchmark.split,
        model=model, variants=variants,
        degenerate_rate=_rate(sum("degenerate" in i.flags or i.status == Status.DEGENERATE for i in scored), n),
        refused_rate=_rate(sum(i.status == Status.REFUSED for i in scored), n),
        tokens_in=sum(i.tokens_in for i in items), tokens_out=sum(i.tokens_out for i in items),
        generation_seconds=round(generation_seconds, 3),
        generation_seconds_per_1k_questions=round(generation_seconds * 1000 / len(items), 1) if items else 0.0,
        cost_cny=round(cost, 6) if cost is not None else None,
        cost_cny_per_1k_questions=round(cost * 1000 / len(items), 4) if cost is not None and items else None,
        versions=versions, created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
