"""The regression gate: may this candidate (e.g. a new LoRA adapter) replace the baseline?

``decide`` is pure: two ``Run`` values and a ``GateConfig`` in, a ``GateDecision`` out.
Loading, printing and exit codes belong to the caller (CLI, pytest plugin).

The candidate FAILS when any of these holds (defaults in brackets, all configurable):

1. its execution accuracy is below the baseline's by more than ``max_accuracy_drop``
   [0.02, i.e. two percentage points, absolute];
2. its degenerate rate rises by more than ``max_degenerate_rise`` [0.02, absolute];
3. its refused rate rises by more than ``max_refused_rise`` [0.02, absolute];
4. a paired test shows a significant drop: exact McNemar p < ``alpha`` [0.05] with more
   questions broken (correct -> wrong) than fixed (wrong -> correct), AND the upper bound of the
   paired-bootstrap ``1 - alpha`` [95 %] confidence interval for the accuracy difference
   (candidate - baseline) is below 0 [10,000 resamples, seed 0].

Accuracies and rates for 1-3 are the runs' own summary figures (``Summary.execution_accuracy``,
``degenerate_rate``, ``refused_rate``; ``gold_error`` questions are excluded from them), except
when both runs have per-question results over different question sets (say the candidate ran
``pytest -k spatial``): then all figures are recomputed over the questions scored in both, and a
note says so. The paired test 4 uses only questions present and scored in both runs. When either run has no
per-question results (e.g. the baseline is a stored summary.json alone), 4 cannot run: the
gate decides on 1-3 and says so in ``reasons``.

Runs over different benchmarks (``benchmark_sha256``) or splits are never compared: that raises
``GateError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.benchmark.model import Benchmark
from harness.errors import GateError
from harness.gate.stats import (
    DEFAULT_BOOTSTRAP_SAMPLES,
    DEFAULT_SEED,
    Pairing,
    bootstrap_diff_ci,
    mcnemar_exact,
    pair_results,
)
from harness.report.records import ItemResult, Run, Summary, load_run
from harness.report.summary import summarise

# Two floats that print the same must not fail a margin: 0.52 - 0.50 is 0.020000000000000018.
_EPS = 1e-9
FIXED, BROKEN = "fixed", "broken"
CHANGES = {FIXED: "wrong → correct", BROKEN: "correct → wrong"}


@dataclass(frozen=True)
class GateConfig:
    """Margins of the regression gate. All rates and margins are absolute fractions (0.02 = 2 points).

    - ``max_accuracy_drop`` = 0.02: largest allowed fall in execution accuracy.
    - ``max_degenerate_rise`` = 0.02: largest allowed rise in the degenerate (looping output) rate.
    - ``max_refused_rise`` = 0.02: largest allowed rise in the refused (non-SELECT SQL) rate.
    - ``alpha`` = 0.05: significance level of the exact McNemar test; the bootstrap interval
      is the matching ``1 - alpha`` (95 %) interval.
    - ``bootstrap_samples`` = 10,000 and ``bootstrap_seed`` = 0: the paired bootstrap.
    """

    max_accuracy_drop: float = 0.02
    max_degenerate_rise: float = 0.02
    max_refused_rise: float = 0.02
    alpha: float = 0.05
    bootstrap_samples: int = DEFAULT_BOOTSTRAP_SAMPLES
    bootstrap_seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        from harness.options import check_ranges  # the ranges live in the option table, with the flags

        check_ranges(self)
        if self.bootstrap_samples < 1:
            raise ValueError(f"GateConfig.bootstrap_samples must be positive, got {self.bootstrap_samples}")


@dataclass(frozen=True)
class Flip:
    """One question whose correctness changed between baseline and candidate."""

    id: str
    question: str
    baseline_status: str
    candidate_status: str

    @property
    def fixed(self) -> bool:
        return self.candidate_status == "correct"

    @property
    def change(self) -> str:
        """``fixed`` (wrong -> correct) or ``broken`` (correct -> wrong): the gate's one vocabulary."""
        return FIXED if self.fixed else BROKEN


def flip_counts(broken: int, fixed: int) -> str:
    """The flips in words, the same in the console, Markdown and HTML reports.

    >>> flip_counts(0, 8)
    '0 broken (correct → wrong), 8 fixed (wrong → correct)'
    """
    return f"{broken} {BROKEN} ({CHANGES[BROKEN]}), {fixed} {FIXED} ({CHANGES[FIXED]})"


@dataclass(frozen=True)
class GateDecision:
    """The verdict and the evidence behind it.

    ``reasons`` lists every failed check (empty when ``passed`` and the paired test ran), plus a
    note when the paired test could not run. The McNemar and bootstrap fields are ``None`` when
    it did not run (``paired`` is False). ``fixed`` / ``broken`` are question ids:
    wrong -> correct and correct -> wrong; ``flips`` carries the same with question text and
    statuses, baseline order, broken first.
    """

    passed: bool
    reasons: tuple[str, ...]
    baseline_label: str
    candidate_label: str
    baseline_accuracy: float
    candidate_accuracy: float
    delta: float  # candidate - baseline
    baseline_degenerate_rate: float
    candidate_degenerate_rate: float
    baseline_refused_rate: float
    candidate_refused_rate: float
    paired: bool
    n_paired: int
    mcnemar_b: int | None  # broken: correct -> wrong
    mcnemar_c: int | None  # fixed: wrong -> correct
    mcnemar_p: float | None
    ci_low: float | None
    ci_high: float | None
    fixed: tuple[str, ...]
    broken: tuple[str, ...]
    flips: tuple[Flip, ...]
    config: GateConfig

    @property
    def exit_code(self) -> int:
        """0 when passed, 1 when the candidate is rejected (the CLI's exit status)."""
        return 0 if self.passed else 1


@dataclass(frozen=True)
class _Measures:
    """The figures the margins compare: a run's summary, or ``summarise`` over some of its questions."""

    accuracy: float
    degenerate_rate: float
    refused_rate: float

    @classmethod
    def of_summary(cls, s: Summary) -> _Measures:
        return cls(s.execution_accuracy, s.degenerate_rate, s.refused_rate)

    @classmethod
    def of_items(cls, run: Run, ids: set[str]) -> _Measures:
        """The run's figures over ``ids`` only, computed by the same ``summarise`` as the run's own."""
        s = run.summary
        bench = Benchmark(Path(s.benchmark), s.split, (), {}, s.benchmark_sha256)
        return cls.of_summary(summarise([r for r in run.items if r.id in ids], benchmark=bench, model=s.model))


@dataclass(frozen=True)
class _Paired:
    """The paired test's numbers (McNemar b = broken, c = fixed) and, when it fails, why."""

    n: int
    broken: tuple[str, ...]
    fixed: tuple[str, ...]
    p_value: float
    ci_low: float
    ci_high: float
    reason: str | None


def load_baseline(path: Path | str) -> Run:
    """Load a baseline from a run directory or a summary.json.

    Unlike ``load_run``, a summary.json without results.jsonl beside it is accepted: the Run then
    has no items and ``decide`` falls back to the margins (the paired test needs per-question
    results). Anything else missing raises ``RunFileError`` naming the path.
    """
    return load_run(path, require_results=False)


def check_comparable(baseline: Run, candidate: Run) -> None:
    """Raise ``GateError`` unless both runs are over the same benchmark content and split."""
    b, c = baseline.summary, candidate.summary
    if b.benchmark_sha256 != c.benchmark_sha256:
        raise GateError(
            "runs are over different benchmarks: baseline "
            f"{baseline.path} has benchmark '{b.benchmark}' sha256 {b.benchmark_sha256 or '(none)'}, candidate "
            f"{candidate.path} has '{c.benchmark}' sha256 {c.benchmark_sha256 or '(none)'}. "
            "Hint: re-run both on the same benchmark directory; an edited benchmark needs a new baseline."
        )
    if b.split != c.split:
        raise GateError(
            f"runs are over different splits: baseline {baseline.path} used split '{b.split}', "
            f"candidate {candidate.path} used split '{c.split}'. Hint: pass the same --split to both runs."
        )


def flips_between(baseline: Run, candidate: Run) -> tuple[Flip, ...]:
    """Questions correct in one run and wrong in the other (scored in both), broken first."""
    pairing = pair_results(baseline.items, candidate.items)
    by_id_b: dict[str, ItemResult] = {r.id: r for r in baseline.items}
    by_id_c: dict[str, ItemResult] = {r.id: r for r in candidate.items}

    def flip(i: str) -> Flip:
        rb, rc = by_id_b[i], by_id_c[i]
        return Flip(i, rb.question or rc.question, rb.status, rc.status)

    return tuple(flip(i) for i in pairing.broken) + tuple(flip(i) for i in pairing.fixed)


def decide(baseline: Run, candidate: Run, config: GateConfig | None = None) -> GateDecision:
    """Decide whether ``candidate`` may replace ``baseline``; see the module docstring for the rules.

    Raises ``GateError`` for runs over different benchmarks or splits, or with per-question
    results that share no scored question.
    """
    config = config or GateConfig()
    check_comparable(baseline, candidate)
    pairing = _pairing(baseline, candidate)
    (base_m, cand_m), notes = _measures(baseline, candidate, pairing)
    reasons = _margin_reasons(base_m, cand_m, config)
    paired = _paired_test(pairing, config) if pairing is not None else None
    if paired is not None and paired.reason:
        reasons.append(paired.reason)
    passed = not reasons
    reasons += notes
    if paired is None:
        missing = " and ".join(
            f"{role} ({run.path})" for role, run in (("baseline", baseline), ("candidate", candidate)) if not run.items
        )
        reasons.append(
            f"note: no per-question results for {missing}, so the paired test (McNemar + bootstrap) "
            "did not run; decided on the accuracy, degenerate and refused margins only"
        )
    return GateDecision(
        passed=passed, reasons=tuple(reasons), config=config,
        baseline_label=baseline.label, candidate_label=candidate.label,
        baseline_accuracy=base_m.accuracy, candidate_accuracy=cand_m.accuracy, delta=cand_m.accuracy - base_m.accuracy,
        baseline_degenerate_rate=base_m.degenerate_rate, candidate_degenerate_rate=cand_m.degenerate_rate,
        baseline_refused_rate=base_m.refused_rate, candidate_refused_rate=cand_m.refused_rate,
        paired=paired is not None, n_paired=paired.n if paired else 0,
        mcnemar_b=len(paired.broken) if paired else None, mcnemar_c=len(paired.fixed) if paired else None,
        mcnemar_p=paired.p_value if paired else None,
        ci_low=paired.ci_low if paired else None, ci_high=paired.ci_high if paired else None,
        fixed=paired.fixed if paired else (), broken=paired.broken if paired else (),
        flips=flips_between(baseline, candidate) if paired else (),
    )


def _pairing(baseline: Run, candidate: Run) -> Pairing | None:
    """Both runs' results aligned by question, or None when either has no per-question results."""
    if not baseline.items or not candidate.items:
        return None
    pairing = pair_results(baseline.items, candidate.items)
    if pairing.n == 0:
        raise GateError(
            f"baseline {baseline.path} and candidate {candidate.path} share no scored question ids "
            f"({len(baseline.items)} and {len(candidate.items)} results). "
            "Hint: both runs must use the same benchmark questions; check the ids in results.jsonl."
        )
    return pairing


def _measures(baseline: Run, candidate: Run, pairing: Pairing | None) -> tuple[tuple[_Measures, _Measures], list[str]]:
    """Whole-run figures, or (when the runs scored different questions) figures over the shared ones."""
    whole = (_Measures.of_summary(baseline.summary), _Measures.of_summary(candidate.summary))
    if pairing is None:
        return whole, []
    shared = set(pairing.ids)
    n_base, n_cand = baseline.summary.n_scored, candidate.summary.n_scored
    if len(shared) >= max(n_base, n_cand):
        return whole, []
    # e.g. `pytest -k spatial` ran a subset: whole-run figures would compare different questions.
    note = (f"note: the runs scored different questions (baseline {n_base}, candidate {n_cand}); "
            f"every figure is over the {len(shared)} questions scored in both")
    return (_Measures.of_items(baseline, shared), _Measures.of_items(candidate, shared)), [note]


def _margin_reasons(base: _Measures, cand: _Measures, config: GateConfig) -> list[str]:
    """Rules 1-3: one reason per margin exceeded."""
    reasons = []
    delta = cand.accuracy - base.accuracy
    if -delta > config.max_accuracy_drop + _EPS:
        reasons.append(
            f"execution accuracy fell from {base.accuracy:.1%} to {cand.accuracy:.1%} ({delta * 100:+.1f} points), "
            f"more than the allowed drop of {config.max_accuracy_drop * 100:.1f} points"
        )
    for what, b_rate, c_rate, margin in (
        ("degenerate", base.degenerate_rate, cand.degenerate_rate, config.max_degenerate_rise),
        ("refused", base.refused_rate, cand.refused_rate, config.max_refused_rise),
    ):
        if c_rate - b_rate > margin + _EPS:
            reasons.append(
                f"{what} rate rose from {b_rate:.1%} to {c_rate:.1%} ({(c_rate - b_rate) * 100:+.1f} points), "
                f"more than the allowed rise of {margin * 100:.1f} points"
            )
    return reasons


def _paired_test(pairing: Pairing, config: GateConfig) -> _Paired:
    """Rule 4: exact McNemar and the paired-bootstrap interval of the accuracy difference."""
    b, c = len(pairing.broken), len(pairing.fixed)
    p_value = mcnemar_exact(b, c)
    ci_low, ci_high = bootstrap_diff_ci(pairing.baseline, pairing.candidate, n_resamples=config.bootstrap_samples,
                                        confidence=1 - config.alpha, seed=config.bootstrap_seed)
    reason = None
    if p_value < config.alpha and b > c and ci_high < 0:
        reason = (f"significant drop on {pairing.n} paired questions: {b} {BROKEN} vs {c} {FIXED}, "
                  f"McNemar exact p = {p_value:.3g} < alpha {config.alpha:g}, "
                  f"{1 - config.alpha:.0%} bootstrap CI of the accuracy difference "
                  f"[{ci_low * 100:+.1f}, {ci_high * 100:+.1f}] points lies below 0")
    return _Paired(pairing.n, pairing.broken, pairing.fixed, p_value, ci_low, ci_high, reason)
