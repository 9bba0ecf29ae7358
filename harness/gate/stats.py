"""Paired statistics between two runs over the same questions.

Two runs of one benchmark answer the *same* questions, so the right tests are paired: what
matters is how many questions changed outcome, not the two accuracies taken separately.
Everything here is a pure function of per-question correctness; no I/O, no scipy.

Conventions used throughout (baseline first, candidate second):

* ``b`` = *broken*: correct in the baseline, wrong in the candidate;
* ``c`` = *fixed*: wrong in the baseline, correct in the candidate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.report.records import ItemResult

DEFAULT_BOOTSTRAP_SAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Pairing:
    """Per-question correctness of two runs, aligned by question id.

    Only ids present in both runs and scored in both (not ``gold_error``) are kept; ``ids`` is
    in the baseline's order, so results are reproducible.
    """

    ids: tuple[str, ...]
    baseline: tuple[bool, ...]
    candidate: tuple[bool, ...]

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def broken(self) -> tuple[str, ...]:
        """Ids correct in the baseline and wrong in the candidate (McNemar's ``b``)."""
        return tuple(i for i, x, y in zip(self.ids, self.baseline, self.candidate, strict=True) if x and not y)

    @property
    def fixed(self) -> tuple[str, ...]:
        """Ids wrong in the baseline and correct in the candidate (McNemar's ``c``)."""
        return tuple(i for i, x, y in zip(self.ids, self.baseline, self.candidate, strict=True) if y and not x)

    @property
    def baseline_accuracy(self) -> float:
        return sum(self.baseline) / self.n if self.n else 0.0

    @property
    def candidate_accuracy(self) -> float:
        return sum(self.candidate) / self.n if self.n else 0.0


def pair_results(baseline: Iterable[ItemResult], candidate: Iterable[ItemResult]) -> Pairing:
    """Align two runs' results by question id.

    A question counts only when both runs have it and neither marks it ``gold_error`` (a
    benchmark defect is never held for or against a model). Correct means status ``correct``.

    >>> from harness.report.records import ItemResult
    >>> def item(i, status):
    ...     return ItemResult(i, "q", "SELECT 1", "", "SELECT 1", status, status == "correct", None, None)
    >>> p = pair_results([item("1", "correct"), item("2", "wrong_result"), item("3", "gold_error")],
    ...                  [item("2", "correct"), item("1", "correct"), item("3", "correct"), item("4", "correct")])
    >>> p.ids, p.baseline, p.candidate, p.fixed
    (('1', '2'), (True, False), (True, True), ('2',))
    """
    cand = {r.id: r for r in candidate}
    ids, base_ok, cand_ok = [], [], []
    for r in baseline:
        other = cand.get(r.id)
        if other is None or not r.scored or not other.scored:
            continue
        ids.append(r.id)
        base_ok.append(r.correct)
        cand_ok.append(other.correct)
    return Pairing(tuple(ids), tuple(base_ok), tuple(cand_ok))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under the null hypothesis (both runs equally good) each discordant question is equally
    likely to go either way, so ``min(b, c)`` follows Binomial(b + c, 1/2):
    ``p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c))``, and ``p = 1`` when there
    are no discordant pairs. Exact integer arithmetic, so it is right for small counts where the
    chi-squared approximation is not.

    >>> mcnemar_exact(10, 0) == 2 / 1024
    True
    >>> mcnemar_exact(5, 1)
    0.21875
    >>> mcnemar_exact(0, 0), mcnemar_exact(4, 4)
    (1.0, 1.0)
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    # Exact rational arithmetic until the final division: no float underflow for large n.
    return min(1.0, 2 * tail / 2**n)


def bootstrap_diff_ci(
    baseline: Sequence[bool],
    candidate: Sequence[bool],
    *,
    n_resamples: int = DEFAULT_BOOTSTRAP_SAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile CI for ``accuracy(candidate) - accuracy(baseline)`` by a paired bootstrap.

    Questions are resampled with replacement, keeping each question's pair of outcomes
    together. Each question contributes ``d = candidate - baseline`` in {-1, 0, +1}, so drawing
    n questions with replacement is the same as drawing the counts of +1/-1/0 questions from a
    multinomial with the observed proportions; that is what we sample (same distribution,
    O(resamples) memory instead of O(resamples * n)). Seeded ``numpy.random.Generator``:
    the same inputs always give the same interval.

    Defaults: 10,000 resamples, 95 %, seed 0.

    >>> bootstrap_diff_ci([True, False, True], [True, False, True])
    (0.0, 0.0)
    >>> bootstrap_diff_ci([False] * 5, [True] * 5)
    (1.0, 1.0)
    >>> low, high = bootstrap_diff_ci([True] * 50 + [False] * 50, [True] * 30 + [False] * 70)
    >>> -0.32 < low < high < -0.08
    True
    """
    if len(baseline) != len(candidate):
        raise ValueError(f"paired samples differ in length: {len(baseline)} vs {len(candidate)}")
    n = len(baseline)
    if n == 0:
        raise ValueError("no paired questions to resample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    fixed = sum(1 for x, y in zip(baseline, candidate, strict=True) if y and not x)
    broken = sum(1 for x, y in zip(baseline, candidate, strict=True) if x and not y)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [fixed / n, broken / n, (n - fixed - broken) / n], size=n_resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return float(low), float(high)
