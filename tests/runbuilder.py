"""Build ``Run`` values in memory (or on disk) from constructed per-question outcomes.

Shared by tests/gate and tests/report (tests/report/conftest.py puts this folder on sys.path).
The summary is derived from the items the way a run's summary.json is: gold_error questions are
excluded from every rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from harness.report.records import ItemResult, Run, Summary, TagScore

SHA = "a" * 64


def item(
    i: int | str,
    status: str,
    *,
    question: str | None = None,
    tags: Sequence[str] = ("spatial",),
    flags: Sequence[str] = (),
    tokens_out: int = 40,
    timings: dict[str, float] | None = None,
    predicted_sql: str | None = "SELECT name FROM poi;",
) -> ItemResult:
    ok = status == "correct"
    scored = status != "gold_error"
    return ItemResult(
        id=str(i),
        question=question if question is not None else f"杭州市第{i}个问题：西湖区有多少个公园？",
        gold_sql="SELECT count(*) FROM park WHERE district = '西湖区';",
        raw_output=predicted_sql or "",
        predicted_sql=predicted_sql,
        status=status,
        execution_match=ok if scored else None,
        execution_match_superset=ok if scored else None,
        exact_match=ok if scored else None,
        flags=tuple(flags),
        tags=tuple(tags),
        tokens_in=200,
        tokens_out=tokens_out,
        timings=dict(timings if timings is not None else {"generate": 0.5, "execute": 0.01}),
    )


def summarize(
    items: Sequence[ItemResult], *, model: str = "hf:base", sha: str = SHA, split: str = "test"
) -> Summary:
    scored = [r for r in items if r.scored]
    n = len(scored)

    def rate(pred) -> float:
        return sum(1 for r in scored if pred(r)) / n if n else 0.0

    tags = sorted({t for r in scored for t in r.tags})
    by_tag = {}
    for t in tags:
        rs = [r for r in scored if t in r.tags]
        by_tag[t] = TagScore(len(rs), sum(r.correct for r in rs) / len(rs))
    return Summary(
        n=len(items),
        n_scored=n,
        execution_accuracy=rate(lambda r: r.correct),
        execution_accuracy_superset=rate(lambda r: bool(r.execution_match_superset)),
        exact_match=rate(lambda r: bool(r.exact_match)),
        status_counts=dict(Counter(r.status for r in items)),
        flag_counts=dict(Counter(f for r in items for f in r.flags)),
        by_tag=by_tag,
        fixture_intact=True,
        benchmark="hangzhou",
        benchmark_sha256=sha,
        split=split,
        model=model,
        degenerate_rate=rate(lambda r: r.status == "degenerate" or "degenerate" in r.flags),
        refused_rate=rate(lambda r: r.status == "refused"),
        tokens_in=sum(r.tokens_in for r in items),
        tokens_out=sum(r.tokens_out for r in items),
        generation_seconds=sum(r.timings.get("generate", 0.0) for r in items),
    )


def make_run(
    items: Sequence[ItemResult],
    *,
    model: str = "hf:base",
    sha: str = SHA,
    split: str = "test",
    path: str = "runs/base",
) -> Run:
    return Run(Path(path), summarize(items, model=model, sha=sha, split=split), tuple(items))


def from_outcomes(outcomes: str, *, wrong: str = "wrong_result", **kwargs) -> Run:
    """``"1101"`` -> questions 1..4, correct where '1', ``wrong`` where '0'."""
    return make_run([item(i, "correct" if ch == "1" else wrong) for i, ch in enumerate(outcomes, 1)], **kwargs)


def write_run(run: Run, directory: Path, *, with_results: bool = True) -> Path:
    """Write ``run`` as a run directory (summary.json, and results.jsonl unless told not to)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(run.summary.to_json(), encoding="utf-8")
    if with_results:
        (directory / "results.jsonl").write_text(
            "".join(r.to_json() + "\n" for r in run.items), encoding="utf-8"
        )
    return directory
