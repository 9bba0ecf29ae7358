"""harness.finetune on the tiny random-init Llama: Trainer, answer-only loss, dev scoring by the harness at
checkpoints (with a real PostGIS, and without a database), the best checkpoint kept, resume, options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.benchmark.loader import load_benchmark
from harness.benchmark.model import Question
from harness.cli import main
from harness.finetune import CURVE_FILE, DevSet, FinetuneConfig, encode_example, finetune_questions
from harness.finetune.data import IGNORE_INDEX, Example, RightPaddingCollator
from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.lora import load_lora_backend
from harness.prompts.templates import TEMPLATE_FILE, get_template

MINI = Path(__file__).resolve().parents[1] / "data" / "mini"
QS = [Question(id=str(i), question="hello world", golds=("SELECT a FROM t ;",), context="please answer")
      for i in range(4)]
TINY = FinetuneConfig(steps=4, batch_size=2, r=2, alpha=4, evals=2, warmup=0.25)


def test_labels_cover_the_answer_only_and_end_with_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels = encode_example(tok, get_template("seed-zh"), QS[0], 512)
    answer = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(answer) == "SELECT a FROM t ; </s>"
    assert answer[-1] == tok.eos_token_id
    assert len(ids) == len(labels)


def test_collator_pads_on_the_right_and_never_trains_on_padding():
    collate = RightPaddingCollator(pad_id=0)
    batch = collate([Example((5, 6, 7), (IGNORE_INDEX, 6, 7)), Example((5, 6), (IGNORE_INDEX, 6))])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 6, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 6, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert collate.tokens_seen == 5


def test_a_compiled_run_pads_every_batch_to_one_width():
    from harness.finetune.trainer import _one_width

    examples = [Example((5,) * 70, (IGNORE_INDEX,) * 70), Example((5, 6), (IGNORE_INDEX, 6))]
    width = _one_width(examples)
    assert width == 128  # the longest example, rounded up to 64: one shape for the compiler
    collate = RightPaddingCollator(pad_id=0, width=width)
    short = collate([examples[1]])
    assert short["input_ids"].shape == (1, 128) and short["attention_mask"].sum() == 2
    assert collate([examples[0]])["labels"].shape == (1, 128) and collate.tokens_seen == 72


def test_finetune_keeps_the_best_checkpoint_and_writes_its_curve(tmp_path, tiny_model_dir):
    out = tmp_path / "adapter"
    dev = DevSet(MINI, "dev", tuple(QS[:2]), db="none", max_new_tokens=8)
    res = finetune_questions(QS, base=str(tiny_model_dir), out=out, template="sqlcoder", config=TINY,
                             dtype="fp32", dev=dev, progress=False)
    assert res.steps == 4 and res.examples == 4
    assert [c.step for c in res.curve] == [2, 4]
    assert all(c.metric == "exact_match" and c.n == 2 for c in res.curve)
    assert res.best is not None and res.best.step in (2, 4) and res.tokens_per_second > 0
    assert 0 < res.dev_seconds < res.seconds  # dev scoring is timed apart from training
    curve = json.loads((out / CURVE_FILE).read_text())
    assert curve["best"]["step"] == res.best.step and len(curve["loss"]) >= 1
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    assert json.loads((out / TEMPLATE_FILE).read_text())["name"] == "sqlcoder"
    backend = load_lora_backend(str(out), BackendOptions(dtype="fp32"))
    assert backend.template == get_template("sqlcoder")
    (g,) = backend.generate([Prompt("1", "go_eos")], GenerationConfig(max_new_tokens=5))
    assert g.text.strip() == "e1" and g.finish_reason == "stop"


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "adapter"
    first = finetune_questions(QS, base=str(tiny_model_dir), out=out, config=FinetuneConfig(
        steps=2, batch_size=2, r=2, alpha=4, evals=1), dtype="fp32", progress=False)
    assert first.steps == 2 and (out / "checkpoints" / "checkpoint-2").is_dir()
    again = finetune_questions(QS, base=str(tiny_model_dir), out=out, config=FinetuneConfig(
        steps=4, batch_size=2, r=2, alpha=4, evals=1), dtype="fp32", resume=True, progress=False)
    assert again.steps == 4
    assert again.tokens == first.tokens  # steps 3-4 only: a restart from step 0 would have seen twice as many


def test_resume_without_a_checkpoint_says_so(tmp_path, tiny_model_dir):
    from harness.errors import ModelBackendError

    with pytest.raises(ModelBackendError, match="no checkpoint-N folder"):
        finetune_questions(QS, base=str(tiny_model_dir), out=tmp_path / "a", config=TINY, resume=True)


def test_empty_split_is_an_error(tmp_path, tiny_model_dir):
    from harness.errors import ModelBackendError

    with pytest.raises(ModelBackendError, match="split is empty"):
        finetune_questions([], base=str(tiny_model_dir), out=tmp_path / "a")


@pytest.mark.postgres
def test_cli_scores_checkpoints_by_execution_on_a_real_postgis(tmp_path, tiny_model_dir, capsys, pg_server):
    out = tmp_path / "ad"
    code = main(["finetune", "--benchmark", str(MINI), "--split", "test", "--base-model", f"hf:{tiny_model_dir}",
                 "--out", str(out), "--steps", "2", "--lr", "1e-3", "--lora-r", "2", "--batch-size", "2",
                 "--evals", "1", "--dev-split", "dev", "--dev-db", "local", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "--model lora:" in printed and "best dev execution_accuracy" in printed
    curve = json.loads((out / CURVE_FILE).read_text())
    assert curve["dev_curve"][0]["metric"] == "execution_accuracy"
    assert curve["dev_curve"][0]["execution_accuracy"] is not None
    assert (out / TEMPLATE_FILE).is_file()


def test_also_adds_another_benchmarks_questions_and_the_curve_names_every_source(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "ad"
    code = main(["finetune", "--benchmark", str(MINI), "--split", "test", "--also", f"{MINI}:dev",
                 "--base-model", f"hf:{tiny_model_dir}", "--out", str(out), "--steps", "1", "--lora-r", "2",
                 "--batch-size", "2", "--dev-split", "none", "--no-progress"])
    assert code == 0
    curve = json.loads((out / CURVE_FILE).read_text())
    lines = {name: sum(1 for _ in open(MINI / name, encoding="utf-8")) for name in ("test.jsonl", "dev.jsonl")}
    assert {Path(k).name: v for k, v in curve["data"].items()} == lines
    assert curve["examples"] == sum(lines.values())


def test_schema_augment_adds_questions_from_the_ddl_and_the_curve_counts_them(tmp_path, tiny_model_dir, capsys):
    from harness.finetune.command import _augmented
    out = tmp_path / "ad"
    code = main(["finetune", "--benchmark", str(MINI), "--split", "test", "--schema-augment", "1",
                 "--base-model", f"hf:{tiny_model_dir}", "--out", str(out), "--steps", "1", "--lora-r", "2",
                 "--batch-size", "2", "--dev-split", "none", "--no-progress"])
    assert code == 0
    curve = json.loads((out / CURVE_FILE).read_text())
    train = list(load_benchmark(MINI, "test").questions)
    added = _augmented(MINI, "test", train, 1)
    assert added and curve["data"]["schema-augment"] == len(added)
    assert curve["examples"] == len(train) + len(added)


def test_schema_augment_refuses_a_negative_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["finetune", "--benchmark", str(MINI), "--split", "test", "--out", str(tmp_path / "x"),
              "--schema-augment", "-1"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--schema-augment" in err and "out of range" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_also_without_a_benchmark_directory_names_the_option_and_the_fix(tmp_path, capsys):
    code = main(["finetune", "--benchmark", str(MINI), "--split", "test", "--out", str(tmp_path / "x"),
                 "--also", str(tmp_path / "nowhere") + ":train"])
    err = capsys.readouterr().err
    assert code != 0 and "--also" in err and "is not a benchmark directory" in err and "txt2sql import" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option", [["--lora-r", "0"], ["--lr", "5"], ["--warmup", "1.5"], ["--batch-size", "0"]])
def test_bad_option_values_are_one_line_errors(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exited:
        main(["finetune", "--out", str(tmp_path / "x"), "--benchmark", str(MINI), *option])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and option[0] in err and "out of range" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_several_gpus_without_a_launcher_train_on_one(tmp_path, monkeypatch):
    """No DataParallel: Trainer would copy the model to every visible GPU at every step."""
    from harness.finetune.trainer import FinetuneConfig, _one_gpu_unless_launched, _training_arguments

    args = _training_arguments(tmp_path, FinetuneConfig(), total_steps=4, every=2, progress=False)
    args._n_gpu = 2  # what TrainingArguments counts on a host with two visible GPUs
    assert _one_gpu_unless_launched(args).n_gpu == 1
    monkeypatch.setattr(type(args), "world_size", property(lambda self: 2))  # under torchrun: DDP, untouched
    args._n_gpu = 2
    assert _one_gpu_unless_launched(args).n_gpu == 2
