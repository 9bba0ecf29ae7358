"""``txt2sql finetune``: options to ``FinetuneConfig``, the train and dev splits, a one-line report."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.benchmark.model import Question
from harness.errors import BenchmarkError
from harness.finetune.devscore import DevSet
from harness.finetune.trainer import CURVE_FILE, finetune_questions


def add_finetune_options(f: argparse.ArgumentParser) -> None:
    """The command's own options; the training settings come from the one option table (FinetuneConfig)."""
    from harness.options import FINETUNE, add_to_argparse

    f.add_argument("--benchmark", type=Path, default=None, help="benchmark directory (default: fixtures/hangzhou)")
    f.add_argument("--split", default="train")
    f.add_argument("--base-model", default="embedded")
    f.add_argument("--out", type=Path, required=True, help="adapter directory (checkpoints go to OUT/checkpoints)")
    f.add_argument("--template", default=None)
    f.add_argument("--limit", type=int, help="train on the first N questions only")
    f.add_argument("--also", action="append", default=[], metavar="DIR:SPLIT",
                   help="more training questions from another benchmark directory's split (repeatable), e.g. an "
                        "imported GeoSQL-Bench: --also geosql-explicit:test. An adapter trained on a set can no "
                        "longer be scored on it")
    f.add_argument("--dev-split", default="dev", help="split scored at checkpoints; 'none' to skip")
    f.add_argument("--dev-limit", type=int, default=None)
    f.add_argument("--dev-db", default="auto",
                   help="database for dev scoring: auto | local | docker | DSN | none (exact match only)")
    f.add_argument("--dtype", default="auto")
    f.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints")
    f.add_argument("--no-progress", action="store_true")
    add_to_argparse(f, FINETUNE)


def _extra_questions(spec: str) -> list[Question]:
    """``DIR:SPLIT`` (or ``DIR``, meaning its train split) of ``--also``."""
    from harness.benchmark.loader import load_benchmark

    path, sep, split = spec.rpartition(":")
    if not sep or "/" in split:  # no split given (a colon inside the path is not one)
        path, split = spec, "train"
    if not Path(path).is_dir():
        raise BenchmarkError(path, f"(--also {spec}) is not a benchmark directory. Pass DIR:SPLIT, e.g. --also "
                             "geosql-explicit:test after `txt2sql import geosql-bench FILE --out geosql-explicit`")
    return list(load_benchmark(Path(path), split).questions)


def _augmented(bench_dir: Path, split: str, train: list[Question], rounds: int) -> list[Question]:
    """``--schema-augment``: K rounds of schema-grounding questions, none shaped like another split's gold."""
    from harness.benchmark.loader import available_splits, load_benchmark
    from harness.finetune.augment import schema_questions

    if rounds == 0:
        return []
    scored = [g for s in available_splits(bench_dir) if s != split
              for q in load_benchmark(bench_dir, s).questions for g in q.golds]
    added = schema_questions(train, exclude=scored, rounds=rounds)
    if not added:
        raise BenchmarkError(bench_dir / f"{split}.jsonl", "--schema-augment: the questions' contexts hold no "
                             "CREATE TABLE statement to write questions from; give each question its tables' DDL "
                             "in 'context' (with -- comments or COMMENT ON), or drop --schema-augment")
    return added


def finetune_from_args(args: argparse.Namespace) -> int:
    from harness.benchmark.loader import default_benchmark_dir, load_benchmark
    from harness.options import finetune_config

    config = finetune_config(vars(args))
    bench_dir = Path(args.benchmark or default_benchmark_dir())
    questions = list(load_benchmark(bench_dir, args.split).questions)
    questions = questions[:args.limit] if args.limit else questions
    questions += [q for spec in args.also for q in _extra_questions(spec)]
    questions += _augmented(bench_dir, args.split, questions, args.schema_augment or 0)
    dev = None
    if args.dev_split and args.dev_split != "none" and config.evals > 0:
        dev_qs = tuple(load_benchmark(bench_dir, args.dev_split).questions)
        dev = DevSet(bench_dir, args.dev_split, dev_qs[:args.dev_limit] if args.dev_limit else dev_qs, db=args.dev_db)
    res = finetune_questions(questions, base=args.base_model, out=args.out, template=args.template, config=config,
                             dtype=args.dtype, dev=dev, resume=args.resume, progress=not args.no_progress)
    best = (f"; best dev {res.best.metric} {res.best.value:.3f} at step {res.best.step} "
            f"(degenerate {res.best.degenerate_rate:.3f})" if res.best else "")
    print(f"adapter written to {res.adapter_dir} ({res.examples} examples, {res.steps} steps, loss "
          f"{res.first_loss:.3f} -> {res.last_loss:.3f}, {res.seconds:.0f} s of which {res.dev_seconds:.0f} s dev scoring; "
          f"training {res.seconds_per_step:.3f} s/step, {res.tokens_per_second:.0f} tokens/s{best}); curve in {res.adapter_dir / CURVE_FILE}; evaluate with "
          f"--model lora:{res.adapter_dir}")
    return 0
