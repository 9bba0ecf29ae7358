"""Step 2 of normalisation: which prediction column is which gold column (names are ignored).

Polynomial in the usual case, bounded in every case:

1. Gold column ``i`` may be prediction column ``j`` only when the two columns are equal as multisets
   (within tolerance): a necessary condition for the rows to match. That costs ``gold width x
   prediction width`` column comparisons, each a sort, and settles most results: every gold column has
   one candidate, or none (then nothing can match, and nothing is searched).
2. Columns holding identical values are interchangeable, so only one of their orders is tried.
3. Only genuinely ambiguous columns (equal multisets, different rows) are searched, pruned by pairs of
   columns (the multiset of value pairs must agree too); at most ``MAX_ASSIGNMENTS`` complete
   assignments are tried, and ``ColumnSearch.gave_up`` says when that cap cut the search short.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from harness.scoring.normalise import grouped, groups_equal, multiset_equal

MAX_ASSIGNMENTS = 720  # complete assignments tried against the rows
MAX_STEPS = 100_000  # partial assignments visited


class ColumnSearch:
    """Iterate over assignments ``m`` (gold column ``i`` -> prediction column ``m[i]``), most
    constrained columns first; every prediction column is used at most once."""

    def __init__(self, gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> None:
        self.gold, self.pred = gold, pred
        self.gave_up = False
        self._pairs: dict[tuple[int, int, int, int], bool] = {}
        self.candidates = _candidates(gold, pred)
        gold_first, pred_first = _first_identical(gold), _first_identical(pred)
        # the previous gold column with the same values; the earlier prediction columns with the same values
        self._gold_twin = [max((k for k in range(i) if gold_first[k] == gold_first[i]), default=i)
                           for i in range(len(gold))]
        self._pred_earlier = [[k for k in range(j) if pred_first[k] == pred_first[j]] for j in range(len(pred))]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        if not self.gold or any(not c for c in self.candidates):
            return
        order = sorted(range(len(self.gold)), key=lambda i: len(self.candidates[i]))
        assigned: dict[int, int] = {}
        yielded = steps = 0
        stack: list[Iterator[int]] = [iter(self._options(order[0], assigned))]
        while stack:
            steps += 1
            if steps > MAX_STEPS or yielded >= MAX_ASSIGNMENTS:
                self.gave_up = True
                return
            depth = len(stack) - 1
            column = order[depth]
            assigned.pop(column, None)
            choice = next(stack[-1], None)
            if choice is None:
                stack.pop()
                continue
            assigned[column] = choice
            if depth + 1 == len(order):
                yielded += 1
                yield tuple(assigned[i] for i in range(len(self.gold)))
                continue
            stack.append(iter(self._options(order[depth + 1], assigned)))

    def _options(self, column: int, assigned: dict[int, int]) -> list[int]:
        used = set(assigned.values())
        options = []
        for j in self.candidates[column]:
            if j in used or any(k not in used for k in self._pred_earlier[j]):
                continue  # a column identical to an unused earlier one: that one stands for both
            twin = self._gold_twin[column]
            if twin != column and twin in assigned and assigned[twin] > j:
                continue  # identical gold columns take their prediction columns in order
            if len(self.candidates[column]) > 1 and not all(
                    self._pair_ok(i, column, a, j) for i, a in assigned.items()):
                continue
            options.append(j)
        return options

    def _pair_ok(self, gi: int, gk: int, pj: int, pl: int) -> bool:
        key = (gi, gk, pj, pl)
        if key not in self._pairs:
            self._pairs[key] = multiset_equal(list(zip(self.gold[gi], self.gold[gk], strict=True)),
                                              list(zip(self.pred[pj], self.pred[pl], strict=True)))
        return self._pairs[key]


def _candidates(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> list[list[int]]:
    """For each gold column, the prediction columns equal to it as multisets (each column grouped once)."""
    gold_groups = [grouped([(v,) for v in column]) for column in gold]
    pred_first = _first_identical(pred)
    pred_groups = {j: grouped([(v,) for v in pred[j]]) for j in set(pred_first)}
    return [[j for j in range(len(pred)) if groups_equal(g, pred_groups[pred_first[j]])] for g in gold_groups]


def _first_identical(columns: Sequence[Sequence[Any]]) -> list[int]:
    """For each column, the index of the first column holding exactly the same values."""
    first: dict[Any, int] = {}
    out = []
    for i, column in enumerate(columns):
        try:
            key: Any = tuple(column)
            out.append(first.setdefault(key, i))
        except TypeError:
            out.append(i)
    return out
