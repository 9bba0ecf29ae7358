"""The gate on constructed pairs of runs: each must be decided correctly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import GateError, Txt2SqlError
from harness.gate import GateConfig, decide, load_baseline
from tests.runbuilder import SHA, from_outcomes, item, make_run, write_run


def outcomes(n_both: int, n_broken: int, n_fixed: int, n_neither: int) -> tuple[str, str]:
    """Baseline and candidate outcome strings with the given concordant/discordant counts."""
    base = "1" * n_both + "1" * n_broken + "0" * n_fixed + "0" * n_neither
    cand = "1" * n_both + "0" * n_broken + "1" * n_fixed + "0" * n_neither
    return base, cand


def runs(n_both: int, n_broken: int, n_fixed: int, n_neither: int, **cand_kwargs):
    base, cand = outcomes(n_both, n_broken, n_fixed, n_neither)
    return (from_outcomes(base, path="runs/base"),
            from_outcomes(cand, model="lora:checkpoint-1600", path="runs/tuned", **cand_kwargs))


def test_clear_regression_fails() -> None:
    baseline, candidate = runs(n_both=50, n_broken=20, n_fixed=2, n_neither=28)
    d = decide(baseline, candidate)
    assert not d.passed
    assert d.exit_code == 1
    assert (d.mcnemar_b, d.mcnemar_c, d.n_paired) == (20, 2, 100)
    assert d.mcnemar_p is not None and d.mcnemar_p < 0.001
    assert d.ci_high is not None and d.ci_high < 0
    assert d.delta == pytest.approx(-0.18)
    text = " ".join(d.reasons)
    assert "execution accuracy fell" in text
    assert "McNemar" in text
    assert len(d.broken) == 20 and len(d.fixed) == 2
    assert [f.id for f in d.flips[:20]] == list(d.broken)
    assert not d.flips[0].fixed and d.flips[-1].fixed


def test_clear_improvement_passes() -> None:
    baseline, candidate = runs(n_both=40, n_broken=2, n_fixed=25, n_neither=33)
    d = decide(baseline, candidate)
    assert d.passed, d.reasons
    assert d.reasons == ()
    assert d.delta == pytest.approx(0.23)
    assert d.mcnemar_p is not None and d.mcnemar_p < 0.05  # significant, but upward
    assert d.ci_low is not None and d.ci_low > 0


def test_small_noisy_difference_passes() -> None:
    # 1 point down on 100 questions: inside the margin, and McNemar cannot tell it from noise.
    baseline, candidate = runs(n_both=60, n_broken=6, n_fixed=5, n_neither=29)
    d = decide(baseline, candidate)
    assert d.passed, d.reasons
    assert d.mcnemar_p is not None and d.mcnemar_p > d.config.alpha
    assert d.ci_low is not None and d.ci_high is not None and d.ci_low < 0 < d.ci_high


def test_drop_beyond_margin_fails_even_if_not_significant() -> None:
    # 4 points down on 50 questions: not significant (p > alpha), but beyond the 2-point margin.
    baseline, candidate = runs(n_both=25, n_broken=3, n_fixed=1, n_neither=21)
    d = decide(baseline, candidate)
    assert d.mcnemar_p is not None and d.mcnemar_p > 0.05
    assert not d.passed
    assert any("execution accuracy fell" in r for r in d.reasons)
    assert not any("McNemar" in r for r in d.reasons)


def test_significant_drop_within_a_loose_margin_still_fails() -> None:
    baseline, candidate = runs(n_both=300, n_broken=30, n_fixed=8, n_neither=662)
    d = decide(baseline, candidate, GateConfig(max_accuracy_drop=0.10))
    assert not d.passed
    assert len(d.reasons) == 1 and "McNemar" in d.reasons[0]


def test_drop_exactly_at_the_margin_passes() -> None:
    baseline, candidate = runs(n_both=48, n_broken=2, n_fixed=0, n_neither=50)
    d = decide(baseline, candidate)  # 0.50 -> 0.48: exactly the 2-point margin
    assert d.passed, d.reasons


def test_degenerate_rate_rise_fails() -> None:
    baseline = from_outcomes("1" * 50 + "0" * 50)
    candidate = from_outcomes("1" * 50 + "0" * 50, wrong="degenerate", model="lora:ckpt")
    d = decide(baseline, candidate)
    assert d.delta == 0
    assert not d.passed
    assert d.candidate_degenerate_rate == pytest.approx(0.5)
    assert any("degenerate rate rose" in r for r in d.reasons)


def test_refused_rate_rise_fails() -> None:
    baseline = from_outcomes("1" * 50 + "0" * 50)
    candidate = from_outcomes("1" * 50 + "0" * 45 + "0" * 5, model="lora:ckpt")
    candidate = make_run([dataclasses.replace(r, status="refused") if int(r.id) > 95 else r
                          for r in candidate.items], model="lora:ckpt")
    d = decide(baseline, candidate)
    assert not d.passed
    assert any("refused rate rose" in r for r in d.reasons)


def test_mismatched_benchmark_hash_raises() -> None:
    baseline = from_outcomes("1100")
    candidate = from_outcomes("1100", sha="b" * 64, path="runs/other")
    with pytest.raises(GateError) as exc:
        decide(baseline, candidate)
    message = str(exc.value)
    assert "different benchmarks" in message
    assert SHA in message and "b" * 64 in message
    assert "runs/base" in message and "runs/other" in message


def test_mismatched_split_raises() -> None:
    baseline = from_outcomes("1100", split="test")
    candidate = from_outcomes("1100", split="dev")
    with pytest.raises(GateError, match="different splits.*'test'.*'dev'"):
        decide(baseline, candidate)


def test_no_shared_question_ids_raises() -> None:
    baseline = make_run([item(1, "correct"), item(2, "correct")])
    candidate = make_run([item(3, "correct"), item(4, "correct")])
    with pytest.raises(GateError, match="share no scored question ids"):
        decide(baseline, candidate)


def test_gold_errors_are_not_paired() -> None:
    baseline = make_run([item(1, "correct"), item(2, "gold_error"), item(3, "correct")])
    candidate = make_run([item(1, "correct"), item(2, "gold_error"), item(3, "correct")])
    d = decide(baseline, candidate)
    assert d.passed and d.n_paired == 2


def test_summary_only_baseline_decides_on_margins(tmp_path: Path) -> None:
    base_run, cand_run = runs(n_both=300, n_broken=30, n_fixed=8, n_neither=662)
    write_run(base_run, tmp_path / "base", with_results=False)
    baseline = load_baseline(tmp_path / "base" / "summary.json")
    assert baseline.items == ()
    d = decide(baseline, cand_run, GateConfig(max_accuracy_drop=0.10))
    # The paired test would have failed this (see above); on the margins alone it passes, and says so.
    assert d.passed
    assert not d.paired and d.mcnemar_p is None and d.ci_low is None
    assert any("paired test" in r and "did not run" in r for r in d.reasons)


def test_load_baseline_reads_run_dir_and_reports_missing(tmp_path: Path) -> None:
    base_run, _ = runs(n_both=3, n_broken=1, n_fixed=0, n_neither=1)
    write_run(base_run, tmp_path / "full")
    loaded = load_baseline(tmp_path / "full")
    assert [r.id for r in loaded.items] == [r.id for r in base_run.items]
    assert loaded.summary == base_run.summary
    with pytest.raises(Txt2SqlError, match=r"missing/summary.json: not found"):
        load_baseline(tmp_path / "missing")
    (tmp_path / "full" / "results.jsonl").unlink()  # a baseline kept as its summary alone
    alone = load_baseline(tmp_path / "full" / "summary.json")
    assert alone.items == () and alone.summary == base_run.summary


def test_decision_is_deterministic() -> None:
    baseline, candidate = runs(n_both=40, n_broken=9, n_fixed=4, n_neither=47)
    assert decide(baseline, candidate) == decide(baseline, candidate)


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="alpha"):
        GateConfig(alpha=0)
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        GateConfig(max_accuracy_drop=2)


def test_subset_candidate_is_compared_on_shared_questions() -> None:
    # The baseline ran 100 questions (60% correct); the candidate only the first 40, all of
    # which the baseline also got right. Whole-run accuracies (60% vs 100%) would be meaningless.
    baseline = from_outcomes("1" * 60 + "0" * 40)
    candidate = from_outcomes("1" * 38 + "00", model="lora:ckpt")
    d = decide(baseline, candidate)
    assert d.n_paired == 40
    assert d.baseline_accuracy == pytest.approx(1.0)
    assert d.candidate_accuracy == pytest.approx(0.95)
    assert not d.passed
    assert any("execution accuracy fell" in r for r in d.reasons)
    assert any("scored different questions" in r and "40 questions" in r for r in d.reasons)
