"""The command line: every bad option value is one line naming the option and its range (exit 2), and
options come from the one table in harness.options, with the dataclasses' defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.benchmark.loader import default_benchmark_dir
from harness.cli import build_parser, eval_config_from_args, main
from harness.gate.gate import GateConfig
from harness.models.base import BackendOptions, GenerationConfig
from harness.options import EVAL, GATE, OPTIONS, PYTEST, Option, option, options_for
from harness.pipeline import EvalConfig

REQUIRED = {EVAL: [], GATE: ["--baseline", "b", "--candidate", "c"]}


def outside(opt: Option) -> str:
    """A value just outside the option's range."""
    r = opt.range
    assert r is not None
    if r.low is not None:
        return str(r.low if r.low_open else (r.low - 1 if opt.type is int else r.low - 0.5))
    assert r.high is not None
    return str(r.high if r.high_open else r.high + 1)


RANGED = [(cmd, o) for cmd in (EVAL, GATE) for o in options_for(cmd) if o.range is not None]


def test_every_command_has_ranged_options() -> None:
    assert {o.flag for _, o in RANGED} >= {"--max-drop", "--alpha", "--limit", "--batch-size", "--max-new-tokens",
                                          "--statement-timeout", "--row-cap"}


@pytest.mark.parametrize(("command", "opt"), RANGED, ids=[f"{c}{o.flag}" for c, o in RANGED])
@pytest.mark.parametrize("bad", ["outside", "nan", "word"])
def test_a_bad_value_is_one_line_naming_the_option_and_range(command, opt, bad, capsys) -> None:
    value = {"outside": outside(opt) if bad == "outside" else "", "nan": "nan", "word": "many"}[bad]
    with pytest.raises(SystemExit) as exc:
        main([command, *REQUIRED[command], opt.flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err
    assert err.startswith(f"txt2sql {command}: error: argument {opt.flag}: ")
    assert str(opt.range) in err


def test_gate_max_drop_5_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gate", "--baseline", "runs/a", "--candidate", "runs/b", "--max-drop", "5"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("txt2sql gate: error: argument --max-drop: 5 is out of range: expected a "
                                       "number in [0, 1] (see txt2sql gate --help)\n")


@pytest.mark.parametrize(("argv", "flag"), [(["eval", "--model-option", "novalue"], "--model-option"),
                                            (["eval", "--quantize", "3bit"], "--quantize"),
                                            (["gate", "--candidate", "c"], "--baseline")])
def test_other_usage_errors_are_one_line_too(argv, flag, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and flag in err


def test_no_options_means_the_dataclass_defaults() -> None:
    config = eval_config_from_args(build_parser().parse_args(["eval"]))
    assert config == EvalConfig(benchmark=default_benchmark_dir())
    assert config.options == BackendOptions() and config.generation == GenerationConfig()


def test_given_options_land_in_their_fields() -> None:
    args = build_parser().parse_args([
        "eval", "--model", "replay:p.jsonl", "--statement-timeout", "2.5", "--row-cap", "10", "--no-cache",
        "--no-progress", "--limit", "3", "--batch-size", "2", "--max-new-tokens", "64", "--dtype", "fp32",
        "--model-option", "concurrency=8", "--model-option", " retries = 5", "--out", "o", "--price-in", "0.5"])
    c = eval_config_from_args(args)
    assert (c.model, c.statement_timeout_ms, c.row_cap, c.use_cache, c.progress, c.limit, c.out) == (
        "replay:p.jsonl", 2500, 10, False, False, 3, Path("o"))
    assert (c.generation.batch_size, c.generation.max_new_tokens) == (2, 64)
    assert c.options.dtype == "fp32" and c.options.price_in_cny_per_1k == 0.5
    assert c.options.extra == {"concurrency": "8", "retries": "5"}


def test_gate_options_build_the_gate_config() -> None:
    from harness.options import gate_config
    args = build_parser().parse_args(["gate", "--baseline", "b", "--candidate", "c", "--alpha", "0.01"])
    assert gate_config(vars(args)) == GateConfig(alpha=0.01)
    assert gate_config({}) == GateConfig()


def test_help_shows_the_dataclass_default() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["eval"].format_help()  # type: ignore[union-attr]
    assert f"(default {GenerationConfig().max_new_tokens})" in " ".join(text.split())
    assert f"(default {EvalConfig.__dataclass_fields__['statement_timeout_ms'].default / 1000})" in " ".join(text.split())


def test_gate_config_built_in_code_is_checked_against_the_same_ranges() -> None:
    with pytest.raises(ValueError, match=r"max_accuracy_drop \(--max-drop\) must be in \[0, 1\], got 5"):
        GateConfig(max_accuracy_drop=5)


def test_every_field_option_names_a_real_field() -> None:
    for o in OPTIONS:
        if o.target is not None:
            assert o.field in o.target.__dataclass_fields__, o.flag
    assert option("--txt2sql-out").flag == "--out"


def test_pytest_gets_every_eval_and_gate_option() -> None:
    cli = {o.flag for o in options_for(EVAL) + options_for(GATE)}
    assert cli - {o.flag for o in options_for(PYTEST)} == set()


def test_eval_records_and_shows_what_it_ran(tmp_path, capsys) -> None:
    import json

    from tests.conftest import MINI
    from tests.test_pipeline import PREDICTIONS
    preds = tmp_path / "pred.jsonl"
    preds.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PREDICTIONS), encoding="utf-8")
    out = tmp_path / "run"
    code = main(["eval", "--model", f"replay:{preds}", "--db", "local", "--benchmark", str(MINI), "--out", str(out),
                 "--no-progress", "--max-new-tokens", "64", "--batch-size", "3"])
    assert code == 0
    run = json.loads((out / "summary.json").read_text(encoding="utf-8"))["run"]
    assert (run["model"]["name"], run["model"]["backend"], run["template"]) == (str(preds), "replay", "seed-zh")
    assert (run["max_new_tokens"], run["batch_size"], run["greedy"]) == (64, 3, True)
    assert run["harness_version"] and run["git_commit"] and len(run["git_commit"].split("+")[0]) == 40
    console = " ".join(capsys.readouterr().out.split())
    assert "template seed-zh, greedy, max 64 new tokens, batch 3" in console
    assert "max 64 new tokens" in (out / "report.html").read_text(encoding="utf-8")


def test_compare_into_an_unwritable_place_is_a_one_line_error(tmp_path, capsys) -> None:
    from tests.runbuilder import from_outcomes, write_run
    run = write_run(from_outcomes("10", path=str(tmp_path / "a")), tmp_path / "a")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["compare", str(run), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {blocker}: cannot write" in err and "internal error" not in err
