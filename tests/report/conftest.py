"""Fixtures for the report tests: constructed runs, shared with tests/gate through runbuilder."""

from __future__ import annotations

import random

import pytest

from harness.report.records import Run
from tests.runbuilder import item, make_run

TAGS = ("spatial", "count", "join", "buffer")
WRONG = ("wrong_result", "exec_error", "timeout", "no_sql")


def _run(seed: int, p_correct: float, model: str, path: str) -> Run:
    rnd = random.Random(seed)
    items = []
    for i in range(1, 61):
        status = "correct" if rnd.random() < p_correct else rnd.choice(WRONG)
        items.append(item(
            i, status, tags=(TAGS[i % len(TAGS)],),
            flags=("unknown_column",) if status == "exec_error" else (),
            tokens_out=rnd.randint(12, 250),
            timings={"generate": round(rnd.uniform(0.2, 3.0), 3), "execute": round(rnd.uniform(0.001, 0.2), 4)},
        ))
    # Hostile and Chinese content that must come out escaped and intact.
    # Question 61 flips between the two runs, so it reaches the flips tables too.
    items.append(item(61, "wrong_result" if seed == 1 else "correct", tags=("spatial",),
                      question="<script>alert('x')</script> 西湖区 | 有多少 & 个公园？",
                      predicted_sql="SELECT '<b>' || name FROM poi WHERE a < 3 AND b > 2;"))
    items.append(item(62, "gold_error", tags=("count",)))
    items.append(item(63, "degenerate", tags=("spatial",), flags=("degenerate", "truncated"),
                      predicted_sql="SELECT * FROM t WHERE geom AND ssqx AND name AND jsdw AND geom AND ssqx AND name"))
    return make_run(items, model=model, path=path)


@pytest.fixture(scope="session")
def base_run() -> Run:
    return _run(1, 0.65, "hf:codellama-13b", "runs/base")


@pytest.fixture(scope="session")
def tuned_run() -> Run:
    return _run(2, 0.45, "lora:checkpoint-1600", "runs/tuned")
