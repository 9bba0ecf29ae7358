"""One table of options for ``txt2sql`` and the pytest plugin.

Each option is declared once, in ``OPTIONS``: its flag, the dataclass field it sets (whose default is
the only default there is), how its text is parsed, the range it accepts and its help. The table is
registered on argparse (``add_to_argparse``) and on pytest (``add_to_pytest``); values the user did
not give stay ``None`` and leave the dataclass default in place (``eval_config``, ``gate_config``).

Adding an option is one entry. For example, with a field ``docker_image`` on ``EvalConfig``::

    Option("--docker-image", EvalConfig, "docker_image", help="image for --db docker"),

A bad value is refused by the parser with one line naming the option and what it accepts:

>>> option("--max-drop").parse("5")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: 5 is out of range: expected a number in [0, 1]
>>> option("--max-new-tokens").parse("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: 0 is out of range: expected a whole number >= 1
>>> option("--limit").parse("ten")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: 'ten' is not a whole number >= 1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.finetune.trainer import FinetuneConfig
from harness.gate.gate import GateConfig
from harness.models.base import BackendOptions, GenerationConfig
from harness.pipeline import EvalConfig

EVAL, GATE, PYTEST, FINETUNE = "eval", "gate", "pytest", "finetune"


@dataclass(frozen=True)
class Range:
    """The numbers an option accepts; ``None`` leaves that side open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # exclude low itself
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any value"


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
PROBABILITY = Range(0, 1, low_open=True, high_open=True)

_KINDS: dict[Callable[[str], Any], str] = {int: "a whole number", float: "a number"}


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (for ``--model-option``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(text)
    return key.strip(), value.strip()


_KINDS[key_value] = "KEY=VALUE, e.g. concurrency=8"


def batch_size(text: str) -> int:
    """``auto`` (stored as 0: the hf engine picks the batch from the GPU's free memory, up to 32 on a CPU) or N.

    >>> batch_size("auto"), batch_size("16")
    (0, 16)
    """
    return 0 if text.strip().lower() == "auto" else int(text)


_KINDS[batch_size] = "auto or a whole number"


def target_modules(text: str) -> str | tuple[str, ...]:
    """``all-linear`` or a comma list of module names.

    >>> target_modules("all-linear"), target_modules("q_proj, v_proj")
    ('all-linear', ('q_proj', 'v_proj'))
    """
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise ValueError(text)
    return "all-linear" if names == ("all-linear",) else names


_KINDS[target_modules] = "all-linear or a comma list of module names"


@dataclass(frozen=True)
class Option:
    """One option. ``target``/``field``: the dataclass field it sets (``None``: read by the command
    itself). ``const``: the value of a flag that takes no argument (``--no-cache`` sets False)."""

    flag: str
    target: type | None
    field: str | None = None
    type: Callable[[str], Any] = str
    range: Range | None = None
    help: str = ""
    choices: tuple[str, ...] = ()
    const: Any = None
    repeat: bool = False  # may be given several times; the field gets a dict of KEY=VALUE pairs
    scale: float = 1  # the field's unit per the option's unit (seconds given, milliseconds stored)
    commands: tuple[str, ...] = (EVAL, PYTEST)
    pytest_flag: str | None = None  # another spelling under pytest, where a short name would clash
    required_in: tuple[str, ...] = ()  # commands that cannot run without it
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def parse(self, text: str) -> Any:
        """The value of ``text``, or ``ArgumentTypeError`` saying what is accepted."""
        kind = _KINDS.get(self.type, "")
        accepted = " ".join(x for x in (kind, str(self.range) if self.range else "") if x)
        try:
            value = self.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {accepted or 'a valid value'}") from None
        out_of_range = self.range is not None and isinstance(value, (int, float)) and value not in self.range
        if out_of_range or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {accepted}")
        return value

    def default(self) -> Any:
        """The default of the field this option sets, in the option's unit (None when it has none)."""
        if self.target is None or self.field is None:
            return None
        f = next(f for f in dataclasses.fields(self.target) if f.name == self.field)
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            return None
        return value / self.scale if self.scale != 1 and isinstance(value, (int, float)) else value

    def to_field(self, value: Any) -> Any:
        if self.repeat:
            return dict(value)
        return round(value * self.scale) if self.scale != 1 else value

    def argparse_kwargs(self, command: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dest": self.dest, "default": None, "help": self._help()}
        if command in self.required_in:
            kwargs["required"] = True
        if self.const is not None:
            return {**kwargs, "action": "store_const", "const": self.const}
        kwargs.update(type=self.parse, metavar=self.metavar)
        if self.choices:
            kwargs["choices"] = self.choices
        if self.repeat:
            kwargs["action"] = "append"
        return kwargs

    def _help(self) -> str:
        default = self.default()
        shown = "" if default in (None, "", {}, False) or self.const is not None else f" (default {default})"
        return (self.help + shown).replace("%", "%%")


# fmt: off
# One line per option: flag, the dataclass and field it sets, parser, accepted range, help.
OPTIONS: tuple[Option, ...] = (
    # the model
    Option("--model", EvalConfig, "model", help="hf:PATH | lora:ADAPTER_DIR | openai:MODEL | replay:FILE | embedded"),
    Option("--base-model", BackendOptions, "base_model", help="base model for lora: adapters (overrides adapter_config.json)"),
    Option("--template", BackendOptions, "template", help="prompt template (default: the adapter's recorded one, else seed-zh)"),
    Option("--dtype", BackendOptions, "dtype", help="auto | bf16 | fp16 | fp32"),
    Option("--device-map", BackendOptions, "device_map", help="transformers device_map, e.g. auto"),
    Option("--quantize", BackendOptions, "quantize", choices=("8bit", "4bit"), help="load with bitsandbytes (GPU)"),
    Option("--max-new-tokens", GenerationConfig, "max_new_tokens", int, AT_LEAST_1, "tokens generated per question at most"),
    Option("--batch-size", GenerationConfig, "batch_size", batch_size, NON_NEGATIVE, "prompts generated together: "
       "auto (0) is the most that fit the GPU's free memory, up to 32 on a CPU"),
    Option("--api-base", BackendOptions, "api_base", help="openai: base URL (default $OPENAI_BASE_URL)"),
    Option("--price-in", BackendOptions, "price_in_cny_per_1k", float, NON_NEGATIVE, "openai: CNY per 1k prompt tokens"),
    Option("--price-out", BackendOptions, "price_out_cny_per_1k", float, NON_NEGATIVE, "openai: CNY per 1k completion tokens"),
    Option("--model-option", BackendOptions, "extra", key_value, repeat=True, metavar="KEY=VALUE",
       help="backend option, repeatable (e.g. load_in_8bit=true, concurrency=8, retries=5, timeout=60)"),
    Option("--no-cache", EvalConfig, "use_cache", const=False, help="do not reuse or store generations"),
    # the run
    Option("--benchmark", EvalConfig, "benchmark", Path, help="benchmark directory (default: fixtures/hangzhou; "
       "under pytest: the one its .txt2sql.json names)"),
    Option("--split", EvalConfig, "split", help="split name"),
    Option("--db", EvalConfig, "db", help="auto | local | docker | postgresql://..."),
    Option("--docker-image", EvalConfig, "docker_image", help="image for --db docker (default $TXT2SQL_DOCKER_IMAGE, "
       "else postgis/postgis:15-3.4, else the one `txt2sql image build` made)"),
    Option("--out", EvalConfig, "out", Path, pytest_flag="--txt2sql-out",
       help="run directory for results.jsonl / summary.json (default runs/<benchmark>-<split>-<model>-<time>)"),
    Option("--limit", EvalConfig, "limit", int, AT_LEAST_1, "evaluate only the first N questions"),
    Option("--statement-timeout", EvalConfig, "statement_timeout_ms", float, Range(0.001), "seconds per query",
           scale=1000),
    Option("--row-cap", EvalConfig, "row_cap", int, AT_LEAST_1, "rows fetched per query at most"),
    Option("--no-progress", EvalConfig, "progress", const=False, pytest_flag="--no-txt2sql-progress",
       help="no progress bars for generation and scoring"),
    # the regression gate
    Option("--baseline", None, help="baseline run directory or its summary.json", commands=(GATE, PYTEST),
           required_in=(GATE,)),
    Option("--gate", None, const=True, commands=(PYTEST,),
       help="fail the session if the run regresses against --baseline"),
    Option("--max-drop", GateConfig, "max_accuracy_drop", float, FRACTION, "largest allowed accuracy drop "
       "(absolute fraction: 0.02 = 2 points)", commands=(GATE, PYTEST)),
    Option("--max-degenerate-rise", GateConfig, "max_degenerate_rise", float, FRACTION,
       "largest allowed rise of the degenerate rate (absolute fraction)", commands=(GATE, PYTEST)),
    Option("--max-refused-rise", GateConfig, "max_refused_rise", float, FRACTION,
       "largest allowed rise of the refused rate (absolute fraction)", commands=(GATE, PYTEST)),
    Option("--alpha", GateConfig, "alpha", float, PROBABILITY, "significance level of the paired test",
       commands=(GATE, PYTEST)),
    # fine-tuning (txt2sql finetune)
    Option("--steps", FinetuneConfig, "steps", int, AT_LEAST_1, "optimizer steps (default: --epochs over the data)", commands=(FINETUNE,)),
    Option("--epochs", FinetuneConfig, "epochs", float, Range(0, low_open=True), "passes over the data", commands=(FINETUNE,)),
    Option("--lr", FinetuneConfig, "lr", float, Range(0, 1, low_open=True), "peak learning rate", commands=(FINETUNE,)),
    Option("--lora-r", FinetuneConfig, "r", int, Range(1, 1024), "LoRA rank", commands=(FINETUNE,)),
    Option("--lora-alpha", FinetuneConfig, "alpha", int, AT_LEAST_1, "LoRA alpha (when only --lora-r is given: 2 x r)", commands=(FINETUNE,)),
    Option("--lora-dropout", FinetuneConfig, "dropout", float, Range(0, 0.9), "LoRA dropout", commands=(FINETUNE,)),
    Option("--target-modules", FinetuneConfig, "target_modules", target_modules, help="all-linear or a comma list, "
       "e.g. q_proj,v_proj", commands=(FINETUNE,)),
    Option("--batch-size", FinetuneConfig, "batch_size", int, AT_LEAST_1, "examples per step per device", commands=(FINETUNE,)),
    Option("--grad-accum", FinetuneConfig, "grad_accum", int, AT_LEAST_1, "gradient accumulation steps", commands=(FINETUNE,)),
    Option("--warmup", FinetuneConfig, "warmup", float, Range(0, 0.9), "warm-up share of the steps", commands=(FINETUNE,)),
    Option("--scheduler", FinetuneConfig, "scheduler", help="cosine | linear | constant_with_warmup | ...", commands=(FINETUNE,)),
    Option("--max-length", FinetuneConfig, "max_length", int, Range(16), "tokens per example at most", commands=(FINETUNE,)),
    Option("--evals", FinetuneConfig, "evals", int, NON_NEGATIVE, "dev scorings (= checkpoints) over the run", commands=(FINETUNE,)),
    Option("--quantize", FinetuneConfig, "quantize", choices=("4bit",), help="QLoRA: 4-bit base (bitsandbytes, GPU)",
           commands=(FINETUNE,)),
    Option("--neftune-alpha", FinetuneConfig, "neftune_alpha", float, NON_NEGATIVE, "NEFTune embedding noise (e.g. 5)",
           commands=(FINETUNE,)),
    Option("--seed", FinetuneConfig, "seed", int, help="random seed", commands=(FINETUNE,)),
    Option("--schema-augment", None, None, int, NON_NEGATIVE, "add schema-grounding questions written from the training "
           "contexts' DDL, K rounds of wordings (none by default); those with another split's gold's template are left "
           "out (harness/finetune/augment.py)", commands=(FINETUNE,), metavar="K"),
    Option("--compile", FinetuneConfig, "compile", choices=("default", "reduce-overhead"),
           help="torch.compile the training step in this mode, every batch padded to one width (GPU)",
           commands=(FINETUNE,)),
)
# fmt: on


def option(flag: str) -> Option:
    """The first declaration of ``flag`` (fine-tuning's own ``--batch-size`` and ``--quantize`` come last)."""
    return next(o for o in OPTIONS if flag in (o.flag, o.pytest_flag))


def options_for(command: str) -> list[Option]:
    return [o for o in OPTIONS if command in o.commands]


def add_to_argparse(parser: argparse.ArgumentParser, command: str) -> None:
    for opt in options_for(command):
        parser.add_argument(opt.flag, **opt.argparse_kwargs(command))


def add_to_pytest(group: Any) -> None:
    """Register on a pytest ``OptionGroup`` (pytest's parser takes argparse's keywords)."""
    for opt in options_for(PYTEST):
        kwargs = opt.argparse_kwargs(PYTEST)
        if kwargs.get("metavar") is None:
            kwargs.pop("metavar", None)
        group.addoption(opt.pytest_flag or opt.flag, **kwargs)


def given(values: Mapping[str, Any], target: type, options: Iterable[Option] = OPTIONS) -> dict[str, Any]:
    """Keyword arguments for ``target`` from the options that were given; absent ones are left out,
    so the dataclass default applies."""
    return {o.field: o.to_field(values[o.dest]) for o in options
            if o.target is target and o.field and values.get(o.dest) is not None}


def eval_config(values: Mapping[str, Any], **fixed: Any) -> EvalConfig:
    """``EvalConfig`` from parsed option values; ``fixed`` wins (e.g. the benchmark a pytest spec names)."""
    return EvalConfig(**{**given(values, EvalConfig), **fixed},
                      options=BackendOptions(**given(values, BackendOptions)),
                      generation=GenerationConfig(**given(values, GenerationConfig)))


def gate_config(values: Mapping[str, Any]) -> GateConfig:
    return GateConfig(**given(values, GateConfig))


def finetune_config(values: Mapping[str, Any]) -> FinetuneConfig:
    """``FinetuneConfig`` from parsed option values; LoRA alpha follows a given rank (2 x r) unless set."""
    fields = given(values, FinetuneConfig, options_for(FINETUNE))
    if "r" in fields and "alpha" not in fields:
        fields["alpha"] = 2 * fields["r"]
    return FinetuneConfig(**fields)


def check_ranges(obj: Any) -> None:
    """Raise ``ValueError`` for a field of ``obj`` outside its option's range (for dataclasses built
    in code, not from the command line)."""
    for o in OPTIONS:
        if o.target is type(obj) and o.field and o.range is not None and o.scale == 1:
            value = getattr(obj, o.field)
            if isinstance(value, (int, float)) and value not in o.range:
                raise ValueError(f"{type(obj).__name__}.{o.field} ({o.flag}) must be {o.range}, got {value}")
