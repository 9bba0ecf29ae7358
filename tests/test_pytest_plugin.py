"""The pytest plugin, driven as a user would: ``pytest benchmarks/ --model=replay:...``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import MINI
from tests.test_pipeline import PREDICTIONS

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture()
def project(pytester):
    pytester.mkdir("benchmarks")
    (pytester.path / "benchmarks" / "mini.txt2sql.json").write_text(json.dumps({"benchmark": str(MINI),
                                                                                "split": "test"}))
    preds = pytester.path / "pred.jsonl"
    preds.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in PREDICTIONS) + "\n", encoding="utf-8")
    return pytester, preds


def test_each_question_is_an_item_with_verdicts(project):
    pytester, preds = project
    out = pytester.path / "run"
    result = pytester.runpytest("benchmarks/", f"--model=replay:{preds}", "--db=local", f"--txt2sql-out={out}",
                                "-p", "no:cacheprovider", "--junitxml=junit.xml")
    # correct: count-near, names; gold_error: skipped; the other three fail
    result.assert_outcomes(passed=2, failed=3, skipped=1)
    text = result.stdout.str()
    assert "status:     degenerate" in text and "jsdw" in text  # the failure message explains the item
    assert "first rows that differ" in text
    assert "execution_accuracy 0.400" in text
    assert f"ran: {preds} (replay), template seed-zh, greedy" in text
    assert (out / "results.jsonl").is_file() and (out / "summary.json").is_file()
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    names = {c.get("name") for c in cases}
    assert "count-near[spatial_distance-aggregate]" in names and len(names) == 6


def test_k_selects_by_tag_and_generates_only_selected(project):
    pytester, preds = project
    out = pytester.path / "run"
    result = pytester.runpytest("benchmarks/", f"--model=replay:{preds}", "--db=local", f"--txt2sql-out={out}",
                                "-p", "no:cacheprovider", "-k", "spatial")
    result.assert_outcomes(passed=1, failed=1)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in rows) == ["count-near", "in-district"]


def test_gate_fails_the_session_on_a_regression(project, tmp_path):
    pytester, preds = project
    base = pytester.path / "base"
    golds = pytester.path / "golds.jsonl"
    golds.write_text("".join(json.dumps({"id": p["id"], "output": o}, ensure_ascii=False) + "\n" for p, o in zip(
        PREDICTIONS, [
            "SELECT COUNT(*) FROM rfgcpy r JOIN aipoi p ON p.name = '市民中心站' WHERE ST_DWithin(r.geom::geography, p.geom::geography, 500)",
            "SELECT ssqx, COUNT(*) FROM rfgcpy GROUP BY ssqx", "SELECT name FROM rfgcpy WHERE mj IS NOT NULL ORDER BY mj DESC, id LIMIT 2",
            "SELECT name FROM rfgcpy WHERE ssqx = '西湖区'",
            "SELECT r.name FROM rfgcpy r JOIN district d ON ST_Contains(d.geom, r.geom) WHERE d.name = '上城区'",
            "SELECT 1"], strict=True)), encoding="utf-8")
    pytester.runpytest("benchmarks/", f"--model=replay:{golds}", "--db=local", f"--txt2sql-out={base}",
                       "-p", "no:cacheprovider").assert_outcomes(passed=5, skipped=1)
    result = pytester.runpytest("benchmarks/", f"--model=replay:{preds}", "--db=local", "-p", "no:cacheprovider",
                                f"--txt2sql-out={pytester.path / 'cand'}", f"--baseline={base}", "--gate")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    gate_line = re.search(r"txt2sql gate =+\n(\w+): (.*)", result.stdout.str())
    assert gate_line and gate_line.group(1) == "FAILED" and "accuracy" in gate_line.group(2)
    # the same predictions against themselves: the gate passes, and the session's exit code is pytest's own
    same = pytester.runpytest("benchmarks/", f"--model=replay:{golds}", "--db=local", "-p", "no:cacheprovider",
                              f"--txt2sql-out={pytester.path / 'again'}", f"--baseline={base}", "--gate")
    assert same.ret == pytest.ExitCode.OK
    assert re.search(r"txt2sql gate =+\nPASSED", same.stdout.str())


@pytest.mark.parametrize(("arg", "accepted"), [("--max-new-tokens=0", ">= 1"), ("--max-drop=5", "in [0, 1]"),
                                               ("--statement-timeout=-1", ">= 0.001")])
def test_a_bad_option_value_is_a_usage_error_naming_the_range(pytester, arg, accepted):
    result = pytester.runpytest(arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"argument {arg.split('=')[0]}" in err and accepted in err and "Traceback" not in err


def test_options_reach_the_evaluation(project):
    pytester, preds = project
    out = pytester.path / "run"
    result = pytester.runpytest("benchmarks/", f"--model=replay:{preds}", "--db=local", f"--txt2sql-out={out}",
                                "-p", "no:cacheprovider", "--limit=2", "--no-txt2sql-progress", "-rs")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2  # --limit reached the pipeline; the other items say why they did not run
    assert result.parseoutcomes()["skipped"] == 4 and "beyond --limit 2" in result.stdout.str()
