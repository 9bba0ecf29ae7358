"""Console output with rich: a run's summary and the gate's verdict.

Both functions only print; they take a ``rich.console.Console`` so callers (CLI, pytest
plugin, tests) choose where it goes. Without one they print to stdout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.gate.gate import flip_counts
from harness.report.records import STATUSES, Summary
from harness.scoring.status import STATUS_STYLES
from harness.sql.visible import visible_text

if TYPE_CHECKING:  # the gate is a later stage; the report only needs its decision's shape
    from harness.gate.gate import GateDecision

QUESTION_WIDTH = 40



def _style(status: str) -> str:
    return STATUS_STYLES.get(status, "")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def shorten(text: str, width: int = QUESTION_WIDTH) -> str:
    """One line of at most ``width`` characters (CJK counts as one here; rich handles cell width).

    >>> shorten("杭州市西湖区有多少个公园？", 6)
    '杭州市西湖…'
    """
    line = " ".join(visible_text(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def print_summary(summary: Summary, console: Console | None = None) -> None:
    """Print metrics, status counts, flag counts and accuracy by tag of one run."""
    console = console or Console()
    n_scored = summary.n_scored
    metrics = Table(title=f"{summary.model} on {summary.benchmark}/{summary.split}", title_justify="left",
                    caption=f"ran: {summary.run.describe()}", caption_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("questions", f"{summary.n} ({n_scored} scored)"),
        ("execution accuracy", _pct(summary.execution_accuracy)),
        ("execution accuracy (superset)", _pct(summary.execution_accuracy_superset)),
        ("exact match", _pct(summary.exact_match)),
        ("degenerate rate", _pct(summary.degenerate_rate)),
        ("refused rate", _pct(summary.refused_rate)),
        ("tokens in / out", f"{summary.tokens_in:,} / {summary.tokens_out:,}"),
        ("generation time", f"{summary.generation_seconds:.1f} s"
                            f" ({summary.generation_seconds_per_1k_questions / 3600:.2f} h per 1,000 questions)"),
    ]
    if summary.variants > 1:
        rows.append(("data variants (test-suite)", str(summary.variants)))
    if summary.cost_cny is not None:
        per_1k = summary.cost_cny_per_1k_questions
        rows.append(("API cost", f"¥{summary.cost_cny:.4f}" + (f" (¥{per_1k:.2f} per 1,000 questions)" if per_1k else "")))
    if summary.fixture_intact is not None:
        rows.append(("fixture intact", "yes" if summary.fixture_intact else "NO: fixture tables changed"))
    for name, value in rows:
        metrics.add_row(name, value)
    console.print(metrics)

    statuses = Table(title="status", title_justify="left")
    statuses.add_column("status")
    statuses.add_column("count", justify="right")
    statuses.add_column("share", justify="right")
    total = summary.n or 1
    ordered = [s for s in STATUSES if s in summary.status_counts]
    ordered += sorted(s for s in summary.status_counts if s not in STATUSES)
    for status in ordered:
        count = summary.status_counts[status]
        statuses.add_row(Text(status, style=_style(status)), str(count), _pct(count / total))
    console.print(statuses)

    if summary.flag_counts:
        flags = Table(title="flags", title_justify="left")
        flags.add_column("flag")
        flags.add_column("count", justify="right")
        for flag, count in sorted(summary.flag_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            flags.add_row(flag, str(count))
        console.print(flags)

    if summary.by_tag:
        tags = Table(title="execution accuracy by tag", title_justify="left")
        tags.add_column("tag")
        tags.add_column("n", justify="right")
        tags.add_column("accuracy", justify="right")
        for tag, score in sorted(summary.by_tag.items()):
            tags.add_row(tag, str(score.n), _pct(score.execution_accuracy))
        console.print(tags)


def print_gate(decision: GateDecision, console: Console | None = None) -> None:
    """Print the verdict line, the numbers behind it and the per-question flips."""
    console = console or Console()
    d = decision
    verdict = Text("PASS" if d.passed else "FAIL", style="bold green" if d.passed else "bold red")
    line = Text.assemble("gate: ", verdict, f"  {d.candidate_label} vs baseline {d.baseline_label}")
    console.print(line)
    for reason in d.reasons:
        console.print(f"  - {reason}", style="yellow" if reason.startswith("note:") else "red", markup=False)

    numbers = Table(show_header=True)
    numbers.add_column("")
    numbers.add_column("baseline", justify="right")
    numbers.add_column("candidate", justify="right")
    numbers.add_column("change", justify="right")
    numbers.add_column("allowed", justify="right")
    cfg = d.config
    numbers.add_row("execution accuracy", _pct(d.baseline_accuracy), _pct(d.candidate_accuracy),
                    f"{d.delta * 100:+.1f} pt", f"≥ {-cfg.max_accuracy_drop * 100:+.1f} pt")
    numbers.add_row("degenerate rate", _pct(d.baseline_degenerate_rate), _pct(d.candidate_degenerate_rate),
                    f"{(d.candidate_degenerate_rate - d.baseline_degenerate_rate) * 100:+.1f} pt",
                    f"≤ {cfg.max_degenerate_rise * 100:+.1f} pt")
    numbers.add_row("refused rate", _pct(d.baseline_refused_rate), _pct(d.candidate_refused_rate),
                    f"{(d.candidate_refused_rate - d.baseline_refused_rate) * 100:+.1f} pt",
                    f"≤ {cfg.max_refused_rise * 100:+.1f} pt")
    console.print(numbers)
    if d.paired and d.mcnemar_p is not None and d.ci_low is not None and d.ci_high is not None:
        console.print(
            f"paired on {d.n_paired} questions: {flip_counts(d.mcnemar_b or 0, d.mcnemar_c or 0)}; McNemar exact p = {d.mcnemar_p:.3g} (alpha {cfg.alpha:g}); "
            f"{1 - cfg.alpha:.0%} bootstrap CI of the difference [{d.ci_low * 100:+.1f}, {d.ci_high * 100:+.1f}] pt",
            markup=False,
        )
    else:
        console.print("paired test: not run (no per-question results for one of the runs)")
    print_flips(d, console)


def print_flips(decision: GateDecision, console: Console | None = None) -> None:
    """The questions that changed outcome: broken (correct → wrong) first, then fixed (wrong → correct).

    Fits an 80-column terminal: only the question is shortened, never the change, id or statuses."""
    console = console or Console()
    if not decision.flips:
        if decision.paired:
            console.print("no question changed outcome")
        return
    table = Table(title=f"flips: {flip_counts(len(decision.broken), len(decision.fixed))}", title_justify="left")
    flips = decision.flips
    used = 16  # 5 columns: 6 rules and 2 cells of padding each
    for header, cells in (("change", [f.change for f in flips]), ("id", [f.id for f in flips]),
                          ("baseline", [f.baseline_status for f in flips]),
                          ("candidate", [f.candidate_status for f in flips])):
        width = max(len(header), *map(len, cells))
        table.add_column(header, no_wrap=True, min_width=width)
        used += width
    table.add_column("question", overflow="ellipsis", no_wrap=True, max_width=max(8, console.width - used))
    for flip in flips:
        table.add_row(Text(flip.change, style="green" if flip.fixed else "red"), flip.id,
                      Text(flip.baseline_status, style=_style(flip.baseline_status)),
                      Text(flip.candidate_status, style=_style(flip.candidate_status)), shorten(flip.question))
    console.print(table)
