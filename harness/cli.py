"""``txt2sql``: thin command line over the pipeline. Exit codes: 0 a completed command (whatever the
score), 1 a failed gate, 2 a usage or infrastructure error."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.benchmark.loader import default_benchmark_dir
from harness.errors import Txt2SqlError


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="hf:PATH | lora:ADAPTER_DIR | openai:MODEL | replay:FILE | embedded (default)")
    g.add_argument("--base-model", help="base model for lora: adapters (overrides adapter_config.json)")
    g.add_argument("--template", help="prompt template name (default: the adapter's recorded one, else seed-zh)")
    g.add_argument("--dtype", default="auto", help="auto | bf16 | fp16 | fp32")
    g.add_argument("--device-map", default=None, help="transformers device_map, e.g. auto")
    g.add_argument("--quantize", choices=("8bit", "4bit"), help="load with bitsandbytes (GPU)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--api-base", help="openai: base URL (default $OPENAI_BASE_URL)")
    g.add_argument("--price-in", type=float, help="openai: CNY per 1k prompt tokens")
    g.add_argument("--price-out", type=float, help="openai: CNY per 1k completion tokens")
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option, repeatable (e.g. load_in_8bit=true, concurrency=8, retries=5, timeout=60)")
    g.add_argument("--no-cache", action="store_true", help="do not reuse or store generations")


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", type=Path, default=None, help="benchmark directory (default: fixtures/hangzhou)")
    p.add_argument("--split", default="test")
    p.add_argument("--db", default="auto", help="auto | local | docker | postgresql://... (default auto)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<benchmark>-<split>-<model>-<time>)")
    p.add_argument("--limit", type=int, help="evaluate only the first N questions")
    p.add_argument("--statement-timeout", type=float, default=10.0, help="seconds per query (default 10)")
    p.add_argument("--row-cap", type=int, default=100_000, help="max rows fetched per query (default 100000)")
    p.add_argument("--no-progress", action="store_true")
    _add_model_options(p)


def eval_config_from_args(args: argparse.Namespace):  # -> EvalConfig
    from harness.models.base import BackendOptions, GenerationConfig
    from harness.pipeline import DEFAULT_MODEL, EvalConfig
    extra = {}
    for item in args.model_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise Txt2SqlError(f"--model-option {item!r}: expected KEY=VALUE, e.g. --model-option concurrency=8")
        extra[key.strip()] = value.strip()
    options = BackendOptions(base_model=args.base_model, dtype=args.dtype, device_map=args.device_map,
                             quantize=args.quantize, template=args.template, api_base=args.api_base,
                             price_in_cny_per_1k=args.price_in, price_out_cny_per_1k=args.price_out, extra=extra)
    return EvalConfig(benchmark=args.benchmark or default_benchmark_dir(), split=args.split,
                      model=args.model or DEFAULT_MODEL, db=args.db, out=args.out, options=options,
                      generation=GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size),
                      statement_timeout_ms=int(args.statement_timeout * 1000), row_cap=args.row_cap,
                      limit=args.limit, use_cache=not args.no_cache, progress=not args.no_progress)


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

    from harness.gate.gate import GateConfig, decide, load_baseline
    from harness.report.console import print_gate
    from harness.report.records import load_run
    cfg = GateConfig(max_accuracy_drop=args.max_drop, max_degenerate_rise=args.max_degenerate_rise,
                     max_refused_rise=args.max_refused_rise, alpha=args.alpha)
    decision = decide(load_baseline(args.baseline), load_run(args.candidate), cfg)
    print_gate(decision, Console())
    return 0 if decision.passed else 1


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
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "compare.html", render_compare_html(runs, decision))
    atomic_write(args.out / "compare.md", render_compare_markdown(runs, decision))
    print(f"wrote {args.out / 'compare.html'} and {args.out / 'compare.md'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from harness.benchmark.geosql import import_geosql_bench
    report = import_geosql_bench(args.file, args.out)
    print(report.describe())
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from harness.finetune import finetune_from_args
    return finetune_from_args(args)


def cmd_image_build(args: argparse.Namespace) -> int:
    from harness.db.image import LOCAL_TAG, build_image
    result = build_image(args.tag or LOCAL_TAG, force=args.force,
                         say=lambda msg: print(f"txt2sql image build: {msg}", file=sys.stderr, flush=True))
    print(result.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="txt2sql", description="Text-to-SQL evaluation harness for PostGIS.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("eval", help="generate, execute and score a benchmark split")
    _add_eval_options(e)
    e.set_defaults(func=cmd_eval)

    g = sub.add_parser("gate", help="fail (exit 1) if a candidate run regresses against a baseline")
    g.add_argument("--baseline", required=True, help="baseline run directory or its summary.json")
    g.add_argument("--candidate", required=True, help="candidate run directory")
    g.add_argument("--max-drop", type=float, default=0.02, help="max allowed accuracy drop (absolute, 0.02)")
    g.add_argument("--max-degenerate-rise", type=float, default=0.02)
    g.add_argument("--max-refused-rise", type=float, default=0.02)
    g.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
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
    f.add_argument("--benchmark", type=Path, default=None)
    f.add_argument("--split", default="train")
    f.add_argument("--base-model", default="embedded")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--template", default=None)
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--lr", type=float, default=2e-4)
    f.add_argument("--lora-r", type=int, default=8)
    f.add_argument("--limit", type=int)
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
