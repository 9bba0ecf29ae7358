"""What a run cost: API money (CNY) and local compute seconds, summed over generations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.models.base import Generation


@dataclass(frozen=True)
class CostSummary:
    n: int
    tokens_in: int
    tokens_out: int
    seconds: float  # generation time (for local backends: CPU/GPU seconds); cached items count 0
    cost_cny: float | None  # None when no item was priced
    cost_cny_per_1000: float | None
    cached: int

    @property
    def seconds_per_1000(self) -> float:
        return self.seconds * 1000 / self.n if self.n else 0.0


def summarize_cost(generations: Sequence[Generation]) -> CostSummary:
    """Totals for a run; cached items cost nothing this run but their recorded cost is kept per item.

    >>> s = summarize_cost([Generation("a", "x", tokens_in=10, cost_cny=0.002), Generation("b", "y", cost_cny=0.004)])
    >>> round(s.cost_cny, 6), round(s.cost_cny_per_1000, 3)
    (0.006, 3.0)
    """
    priced = [g.cost_cny for g in generations if g.cost_cny is not None]
    total = sum(priced) if priced else None
    n = len(generations)
    return CostSummary(
        n=n, tokens_in=sum(g.tokens_in for g in generations), tokens_out=sum(g.tokens_out for g in generations),
        seconds=sum(g.seconds for g in generations if not g.cached), cost_cny=total,
        cost_cny_per_1000=(total * 1000 / n) if (total is not None and n) else None,
        cached=sum(1 for g in generations if g.cached))
