"""``txt2sql``: thin command line over the pipeline. Exit codes: 0 a completed command (whatever the
score), 1 a failed gate, 2 a usage or infrastructure error."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from harness.benchmark.loader import default_benchmark_dir
from harness.errors import OutputDirError, Txt2SqlError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``txt2sql gate: error: argument --max-drop: 5 is out of range:
    expected a number in [0, 1] (see txt2sql gate --help)``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def eval_config_from_args(args: argparse.Namespace):  # -> EvalConfig
    from harness.options import eval_config
    values = vars(args)
    return eval_config(values, benchmark=args.benchmark or default_benchmark_dir())


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.pipeline import evaluate
    from harness.report.console import print_summary
    console = Console()
    result = evaluate(eval_config_from_args(args))
    for w in result.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    print_summary(result.summary, console)
    console.print(f"results: {result.out / 'results.jsonl'}\nsummary: {result.out / 'summary.json'}\n"
                  f"report:  {result.out / 'report.html'}")
    if result.summary.fixture_intact is False:
        console.print("[bold red]The fixture checksum changed during the run: a query modified the database.[/]")
        return 2
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.gate.gate import decide, load_baseline
    from harness.options import gate_config
    from harness.report.console import print_gate
    from harness.report.records import load_run
    candidate = load_run(args.candidate)
    decision = decide(load_baseline(args.baseline), candidate, gate_config(vars(args)))
    print_gate(decision, Console())
    adapter_ok = _gate_adapter_check(args, candidate.summary.model)
    return 0 if decision.passed and adapter_ok else 1


def _gate_adapter_check(args: argparse.Namespace, candidate_model: str) -> bool:
    """A candidate whose adapter fails check-adapter is refused, whatever its scores."""
    from harness.models.adapter_check import SmokeConfig, adapter_for_gate, check_adapter
    adapter = adapter_for_gate(candidate_model, args.adapter)
    if adapter is None:
        return True
    report = check_adapter(adapter, base_model=args.adapter_base_model,
                           smoke=SmokeConfig() if args.adapter_smoke else None)
    print(report.describe())
    if not report.passed:
        print(f"gate: FAIL: the candidate's adapter {adapter} fails check-adapter; fix it before gating")
    return report.passed


def cmd_check_adapter(args: argparse.Namespace) -> int:
    from harness.models.adapter_check import SmokeConfig, check_adapter
    from harness.models.base import BackendOptions
    smoke = None if args.no_smoke else SmokeConfig(benchmark=args.benchmark, split=args.split,
                                                    questions=args.questions, max_new_tokens=args.max_new_tokens)
    report = check_adapter(args.adapter_dir, base_model=args.base_model, template=args.template,
                           options=BackendOptions(dtype=args.dtype), smoke=smoke)
    print(report.describe())
    return 0 if report.passed else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.gate.gate import GateConfig, decide
    from harness.report.html import render_compare_html
    from harness.report.markdown import render_compare_markdown
    from harness.report.records import load_run
    from harness.report.writer import atomic_write
    runs = [load_run(p) for p in args.runs]
    decision = None
    if len(runs) >= 2:
        try:
            decision = decide(runs[0], runs[1], GateConfig())
        except Txt2SqlError as exc:
            print(f"note: no paired comparison: {exc}", file=sys.stderr)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "compare.html", render_compare_html(runs, decision))
        atomic_write(args.out / "compare.md", render_compare_markdown(runs, decision))
    except OSError as exc:
        raise OutputDirError(f"--out {args.out}: cannot write the comparison there ({exc.strerror or exc}). "
                             "Pass a writable directory.") from exc
    print(f"wrote {args.out / 'compare.html'} and {args.out / 'compare.md'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from harness.benchmark.geosql import import_geosql_bench
    report = import_geosql_bench(args.file, args.out)
    print(report.describe())
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from harness.finetune.command import finetune_from_args
    return finetune_from_args(args)


def cmd_image_build(args: argparse.Namespace) -> int:
    from harness.db.image import LOCAL_TAG, build_image
    result = build_image(args.tag or LOCAL_TAG, force=args.force,
                         say=lambda msg: print(f"txt2sql image build: {msg}", file=sys.stderr, flush=True))
    print(result.describe())
    return 0


def _add_adapter_check_parsers(gate: argparse.ArgumentParser, sub: Any) -> None:
    """The gate's adapter options and the ``check-adapter`` command."""
    gate.add_argument("--adapter", type=Path, default=None,
                      help="adapter to check before gating (default: the candidate run's lora: directory, if any)")
    gate.add_argument("--adapter-base-model", default=None, help="base model for the adapter check")
    gate.add_argument("--adapter-smoke", action="store_true", help="also run the adapter check's smoke generation")

    ca = sub.add_parser("check-adapter", help="check a LoRA adapter before evaluating, gating or deploying it")
    ca.add_argument("adapter_dir", type=Path)
    ca.add_argument("--base-model", default=None, help="overrides adapter_config.json's base")
    ca.add_argument("--template", default=None, help="the template evaluation will use (default: the recorded one)")
    ca.add_argument("--benchmark", type=Path, default=None, help="smoke questions from here (default: bundled)")
    ca.add_argument("--split", default="dev")
    ca.add_argument("--questions", type=int, default=5, help="smoke questions (5)")
    ca.add_argument("--max-new-tokens", type=int, default=160)
    ca.add_argument("--dtype", default="auto")
    ca.add_argument("--no-smoke", action="store_true", help="skip the smoke generation (no model is loaded)")
    ca.set_defaults(func=cmd_check_adapter)


def build_parser() -> argparse.ArgumentParser:
    from harness.options import EVAL, GATE, add_to_argparse
    p = Parser(prog="txt2sql", description="Text-to-SQL evaluation harness for PostGIS.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    e = sub.add_parser("eval", help="generate, execute and score a benchmark split")
    add_to_argparse(e, EVAL)
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("gate", help="fail (exit 1) if a candidate run regresses against a baseline")
    g.add_argument("--candidate", required=True, help="candidate run directory")
    add_to_argparse(g, GATE)
    _add_adapter_check_parsers(g, sub)
    g.set_defaults(func=cmd_gate)

    c = sub.add_parser("compare", help="HTML + Markdown report comparing runs")
    c.add_argument("runs", nargs="+", type=Path)
    c.add_argument("--out", type=Path, default=Path("compare"))
    c.set_defaults(func=cmd_compare)

    i = sub.add_parser("import", help="import an external benchmark")
    i.add_argument("format", choices=("geosql-bench",))
    i.add_argument("file", type=Path)
    i.add_argument("--out", type=Path, required=True)
    i.set_defaults(func=cmd_import)

    f = sub.add_parser("finetune", help="train a LoRA adapter on a benchmark's train split")
    from harness.finetune.command import add_finetune_options
    add_finetune_options(f)
    f.set_defaults(func=cmd_finetune)

    im = sub.add_parser("image", help="the harness's PostGIS image for --db docker")
    im_sub = im.add_subparsers(dest="image_command", required=True)
    ib = im_sub.add_parser("build", help="build it from the distribution's packages, without any registry")
    ib.add_argument("--tag", help="image name (default txt2sql-postgis:15-3, which --db docker falls back to)")
    ib.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    ib.set_defaults(func=cmd_image_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except Txt2SqlError as exc:
        print(f"txt2sql: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: say so plainly, keep the traceback, exit like an infra failure
        import traceback
        traceback.print_exc()
        print(f"txt2sql: internal error ({type(exc).__name__}: {exc}). Finished items are kept in the run "
              "directory (results.jsonl.partial) and the generation cache; please report this.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("txt2sql: interrupted; finished items are in the run directory and the generation cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
