"""check-adapter on the tiny random-init Llama: each broken adapter is caught by the check that owns it,
a sound one passes, and the gate refuses a candidate whose adapter fails."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.models.adapter_check import SmokeConfig, check_adapter
from harness.models.base import Prompt
from harness.prompts.templates import TEMPLATE_FILE, get_template
from tests.models.tiny_llama import build_tokenizer, save_tiny

STOPS = SmokeConfig(prompts=(Prompt("eos", "go_eos"), Prompt("sql", "go_sql")), max_new_tokens=12)


@pytest.fixture()
def sound_adapter(tmp_path, adapter_dir) -> Path:
    d = tmp_path / "sound"
    shutil.copytree(adapter_dir, d)
    get_template("seed-zh").save(d / TEMPLATE_FILE)
    return d


def failed(report) -> dict[str, str]:
    return {r.name: r.detail for r in report.failures()}


def test_a_sound_adapter_passes_every_check(sound_adapter):
    report = check_adapter(sound_adapter, smoke=STOPS)
    assert report.passed, report.describe()
    assert [r.name for r in report.results] == ["files", "base", "template", "tokenizer", "smoke"]


def test_a_corrupted_safetensors_header_is_explained(sound_adapter):
    weights = sound_adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:24] = b"{not json at all"  # what a patched state_dict save left in the team's file
    weights.write_bytes(bytes(data))
    report = check_adapter(sound_adapter, smoke=STOPS)
    assert list(failed(report)) == ["files"]
    assert "corrupt safetensors header" in failed(report)["files"] and "state_dict" in failed(report)["files"]


def test_a_wrong_base_is_caught_by_shape(sound_adapter, tmp_path):
    other = save_tiny(tmp_path / "wider", hidden=96)  # another hidden size: no LoRA matrix fits
    report = check_adapter(sound_adapter, base_model=str(other), smoke=STOPS)
    assert "base" in failed(report) and "do not fit" in failed(report)["base"]
    assert "smoke" not in [r.name for r in report.results]  # nothing is generated on a wrong base


def test_a_missing_template_record_fails(adapter_dir):
    report = check_adapter(adapter_dir, smoke=None)
    assert list(failed(report)) == ["template"] and TEMPLATE_FILE in failed(report)["template"]


def test_a_template_other_than_evaluation_uses_fails(sound_adapter):
    report = check_adapter(sound_adapter, template="sqlcoder", smoke=None)
    assert list(failed(report)) == ["template"] and "'seed-zh'" in failed(report)["template"]


def test_a_tokenizer_without_eos_fails(sound_adapter, tmp_path):
    base = save_tiny(tmp_path / "no-eos")
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg["eos_token"] = None
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    report = check_adapter(sound_adapter, base_model=str(base), smoke=None)
    assert "tokenizer" in failed(report) and "no EOS" in failed(report)["tokenizer"]


def test_an_ordinary_pad_token_fails(sound_adapter, tmp_path):
    base = save_tiny(tmp_path / "pad-word")
    tok = build_tokenizer()
    tok.pad_token = "SELECT"  # padding with a real word, as pad id 0 does for some vocabularies
    tok.save_pretrained(base)
    report = check_adapter(sound_adapter, base_model=str(base), smoke=None)
    assert "tokenizer" in failed(report) and "ordinary token" in failed(report)["tokenizer"]


def test_an_adapter_that_never_emits_eos_fails_the_smoke_generation(sound_adapter):
    endless = SmokeConfig(prompts=(Prompt("long", "go_long"), Prompt("eos", "go_eos")), max_new_tokens=4)
    report = check_adapter(sound_adapter, smoke=endless)
    assert list(failed(report)) == ["smoke"] and "without EOS" in failed(report)["smoke"]
    looping = SmokeConfig(prompts=(Prompt("loop", "go_loop"),), max_new_tokens=40)
    assert "looped" in failed(check_adapter(sound_adapter, smoke=looping))["smoke"]


def test_cli_exit_codes(sound_adapter, adapter_dir, capsys):
    assert main(["check-adapter", str(sound_adapter), "--no-smoke"]) == 0
    assert main(["check-adapter", str(adapter_dir), "--no-smoke"]) == 1
    assert "FAIL template" in capsys.readouterr().out


def test_the_gate_refuses_a_candidate_whose_adapter_fails(tmp_path, adapter_dir, sound_adapter, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from runbuilder import from_outcomes, write_run

    base = write_run(from_outcomes("10"), tmp_path / "base")
    for name, adapter, expected in (("good", sound_adapter, 0), ("bad", adapter_dir, 1)):
        run = from_outcomes("10", model=f"lora:{adapter}")
        cand = write_run(run, tmp_path / name)
        assert main(["gate", "--baseline", str(base), "--candidate", str(cand)]) == expected
    assert "fails check-adapter" in capsys.readouterr().out
