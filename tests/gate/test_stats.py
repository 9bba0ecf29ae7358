from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import harness.gate.stats as stats_module
from harness.gate.stats import bootstrap_diff_ci, mcnemar_exact, pair_results
from tests.runbuilder import item


def test_docstring_examples_run() -> None:
    result = doctest.testmod(stats_module)
    assert result.attempted >= 5
    assert result.failed == 0


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (10, 0, 2 / 1024),
        (0, 10, 2 / 1024),
        (5, 1, 14 / 64),  # 2 * (C(6,0) + C(6,1)) / 2^6
        (1, 0, 1.0),  # 2 * 1/2 = 1
        (0, 0, 1.0),
        (3, 3, 1.0),
        (12, 2, 2 * (1 + 14 + 91) / 2**14),
    ],
)
def test_mcnemar_known_values(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_large_counts_do_not_overflow() -> None:
    p = mcnemar_exact(700, 500)
    assert 0 < p < 1e-7
    assert mcnemar_exact(2000, 0) == 0.0 or mcnemar_exact(2000, 0) < 1e-300


def test_mcnemar_rejects_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 2)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_is_a_symmetric_probability(b: int, c: int) -> None:
    p = mcnemar_exact(b, c)
    assert 0 <= p <= 1
    assert p == mcnemar_exact(c, b)
    # A more lopsided split is never less significant than a balanced one of the same size.
    if b > c:
        assert mcnemar_exact(b + 1, c) <= p + 1e-15 or math.isclose(mcnemar_exact(b + 1, c), p)


def test_bootstrap_matches_index_resampling() -> None:
    """The multinomial shortcut has the same distribution as resampling question indices."""
    rng = np.random.default_rng(123)
    base = rng.random(300) < 0.6
    cand = rng.random(300) < 0.5
    low, high = bootstrap_diff_ci(base.tolist(), cand.tolist(), n_resamples=10_000, seed=1)
    idx = np.random.default_rng(2).integers(0, 300, size=(10_000, 300))
    d = cand.astype(float) - base.astype(float)
    ref_low, ref_high = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=0.012)
    assert high == pytest.approx(ref_high, abs=0.012)
    observed = d.mean()
    assert low < observed < high


def test_bootstrap_is_seeded() -> None:
    base = [True, False] * 30
    cand = [True, True, False] * 20
    assert bootstrap_diff_ci(base, cand, seed=7) == bootstrap_diff_ci(base, cand, seed=7)
    # With few resamples the interval shows the seed; with the default 10,000 it barely moves.
    assert {bootstrap_diff_ci(base, cand, n_resamples=50, seed=s) for s in range(5)} != {
        bootstrap_diff_ci(base, cand, n_resamples=50, seed=0)}


def test_bootstrap_width_follows_confidence() -> None:
    base = [True] * 40 + [False] * 60
    cand = [True] * 55 + [False] * 45
    lo90, hi90 = bootstrap_diff_ci(base, cand, confidence=0.90)
    lo99, hi99 = bootstrap_diff_ci(base, cand, confidence=0.99)
    assert lo99 < lo90 < 0.15 < hi90 < hi99


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        bootstrap_diff_ci([True], [True, False])
    with pytest.raises(ValueError, match="no paired"):
        bootstrap_diff_ci([], [])


def test_pairing_keeps_shared_scored_ids_only() -> None:
    baseline = [item(1, "correct"), item(2, "correct"), item(3, "gold_error"), item(4, "wrong_result"),
                item(5, "correct")]
    candidate = [item(4, "correct"), item(3, "correct"), item(2, "timeout"), item(1, "correct"),
                 item(6, "correct")]
    p = pair_results(baseline, candidate)
    assert p.ids == ("1", "2", "4")  # 3 is gold_error in the baseline, 5 and 6 are unshared
    assert p.broken == ("2",)
    assert p.fixed == ("4",)
    assert p.baseline_accuracy == pytest.approx(2 / 3)
    assert p.candidate_accuracy == pytest.approx(2 / 3)
