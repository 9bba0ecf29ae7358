"""Paired statistics and the regression gate between a baseline run and a candidate run."""

from harness.gate.gate import (
    Flip,
    GateConfig,
    GateDecision,
    check_comparable,
    decide,
    flips_between,
    load_baseline,
)
from harness.gate.stats import Pairing, bootstrap_diff_ci, mcnemar_exact, pair_results

__all__ = [
    "Flip",
    "GateConfig",
    "GateDecision",
    "Pairing",
    "bootstrap_diff_ci",
    "check_comparable",
    "decide",
    "flips_between",
    "load_baseline",
    "mcnemar_exact",
    "pair_results",
]
