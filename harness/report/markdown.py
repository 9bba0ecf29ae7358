"""The comparison report as Markdown tables, for CI comments (GitHub/GitLab flavoured). What the
tables list (tags, statuses, timings, flips) comes from ``harness.report.records``, as for the HTML
report, so both always show the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.gate.gate import flip_counts
from harness.report import records
from harness.report.records import Run

if TYPE_CHECKING:
    from harness.gate.gate import Flip, GateDecision

def _cell(value: object, *, code: bool = False) -> str:
    """A Markdown table cell: one line, pipes escaped; outside code spans, HTML too (a question
    may contain ``<script>``; CI comment renderers would drop or interpret it).

    >>> _cell("a | b <i>\\n c")
    'a \\\\| b &lt;i&gt; c'
    """
    text = " ".join(str(value).split())
    if not code:
        text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|")


def _code(value: str | None, width: int = 120) -> str:
    if not value:
        return "—"
    text = " ".join(value.split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return "`" + _cell(text, code=True).replace("`", "'") + "`"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(str(c) if str(c).startswith("`") else _cell(c) for c in row) + " |"
              for row in rows]
    return lines


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def render_gate_markdown(decision: GateDecision) -> list[str]:
    d, cfg = decision, decision.config
    lines = [f"### Gate: {'✅ PASS' if d.passed else '❌ FAIL'}", "",
             f"Candidate **{_cell(d.candidate_label)}** vs baseline **{_cell(d.baseline_label)}**.", ""]
    lines += [f"- {_cell(r)}" for r in d.reasons]
    if d.reasons:
        lines.append("")
    lines += _table(
        ["", "baseline", "candidate", "change", "allowed"],
        [
            ["execution accuracy", _pct(d.baseline_accuracy), _pct(d.candidate_accuracy),
             f"{d.delta * 100:+.1f} pt", f"≥ {-cfg.max_accuracy_drop * 100:+.1f} pt"],
            ["degenerate rate", _pct(d.baseline_degenerate_rate), _pct(d.candidate_degenerate_rate),
             f"{(d.candidate_degenerate_rate - d.baseline_degenerate_rate) * 100:+.1f} pt",
             f"≤ {cfg.max_degenerate_rise * 100:+.1f} pt"],
            ["refused rate", _pct(d.baseline_refused_rate), _pct(d.candidate_refused_rate),
             f"{(d.candidate_refused_rate - d.baseline_refused_rate) * 100:+.1f} pt",
             f"≤ {cfg.max_refused_rise * 100:+.1f} pt"],
        ],
    )
    lines.append("")
    if d.paired and d.mcnemar_p is not None and d.ci_low is not None and d.ci_high is not None:
        lines.append(
            f"Paired on {d.n_paired} questions: {flip_counts(d.mcnemar_b or 0, d.mcnemar_c or 0)}; exact McNemar p = {d.mcnemar_p:.3g} (alpha {cfg.alpha:g}); "
            f"{1 - cfg.alpha:.0%} paired-bootstrap CI of the accuracy difference "
            f"[{d.ci_low * 100:+.1f}, {d.ci_high * 100:+.1f}] pt."
        )
    else:
        lines.append("Paired test not run: no per-question results for one of the runs.")
    lines.append("")
    return lines


def render_flips_markdown(flips: Sequence[Flip], runs: Sequence[Run]) -> list[str]:
    if not flips:
        return ["No question changed outcome between the first two runs.", ""]
    base = {r.id: r for r in runs[0].items}
    cand = {r.id: r for r in runs[1].items}
    rows = []
    for f in flips:
        rb, rc = base.get(f.id), cand.get(f.id)
        rows.append([
            f.change, f.id, f"{f.baseline_status} → {f.candidate_status}",
            f.question, _code(rb.gold_sql if rb else None), _code(rb.predicted_sql if rb else None),
            _code(rc.predicted_sql if rc else None),
        ])
    n_broken = sum(1 for f in flips if not f.fixed)
    return [f"{flip_counts(n_broken, len(flips) - n_broken)}.", "",
            *_table(["change", "id", "status", "question", "gold", "baseline SQL", "candidate SQL"], rows,
                    align="lllllll"), ""]


def render_compare_markdown(runs: Sequence[Run], decision: GateDecision | None = None) -> str:
    """Metrics, gate verdict, accuracy by tag, statuses, tokens, latency and flips as Markdown.

    Same content as ``render_compare_html`` without the plots. Flips are between the first two runs.
    """
    if not runs:
        raise ValueError("render_compare_markdown needs at least one run")
    lines = ["## txt2sql comparison", ""]
    warning = records.benchmark_mismatch(runs)
    if warning:
        lines += [f"> ⚠️ {_cell(warning)}", ""]
    lines += _metrics_section(runs)
    if decision is not None:
        lines += render_gate_markdown(decision)
    lines += _tags_section(runs) + _status_section(runs) + _distribution_section(runs)
    if len(runs) >= 2:
        flips = records.compare_flips(runs, decision)
        lines += [f"### Flips: {_cell(runs[0].label)} → {_cell(runs[1].label)}", ""]
        if flips is None:
            lines += ["Not available: per-question results are missing for one of the runs.", ""]
        else:
            lines += render_flips_markdown(flips, runs)
    return "\n".join(lines).rstrip() + "\n"


def _metrics_section(runs: Sequence[Run]) -> list[str]:
    rows = [[r.label, f"{r.summary.benchmark}/{r.summary.split}", f"{r.summary.n} ({r.summary.n_scored})",
             _pct(r.summary.execution_accuracy), _pct(r.summary.execution_accuracy_superset),
             _pct(r.summary.exact_match), _pct(r.summary.degenerate_rate), _pct(r.summary.refused_rate),
             f"{r.summary.tokens_out:,}", f"{r.summary.generation_seconds:.1f}", r.summary.run.describe()]
            for r in runs]
    return _table(["run", "benchmark", "n (scored)", "execution accuracy", "superset", "exact match", "degenerate",
                   "refused", "tokens out", "generation s", "what ran"], rows, align="ll" + "r" * 8 + "l") + [""]


def _tags_section(runs: Sequence[Run]) -> list[str]:
    tags = records.tag_names(runs)
    if not tags:
        return []
    rows = []
    for tag in tags:
        scores = [run.summary.by_tag.get(tag) for run in runs]
        rows.append([tag, *[f"{s.execution_accuracy:.1%} (n={s.n})" if s else "—" for s in scores]])
    return ["### Execution accuracy by tag", "", *_table(["tag", *[r.label for r in runs]], rows), ""]


def _status_section(runs: Sequence[Run]) -> list[str]:
    statuses = records.status_names(runs)
    if not statuses:
        return []
    rows = [[s, *[str(r.summary.status_counts.get(s, 0)) for r in runs]] for s in statuses]
    return ["### Status breakdown", "", *_table(["status", *[r.label for r in runs]], rows), ""]


def _distribution_section(runs: Sequence[Run]) -> list[str]:
    rows = []
    for run in runs:
        series = [("tokens out", records.tokens_out(run), "{:.0f}")]
        series += [(f"{k} s", records.timings(run, k), "{:.3f}") for k in records.timing_keys(runs)]
        for name, values, fmt in series:
            stats = records.describe(values)
            if stats is not None:
                rows.append([run.label, name, *[fmt.format(v) for v in stats]])
    if not rows:
        return []
    return ["### Tokens and latency per question", "",
            *_table(["run", "measure", "median", "p90", "max"], rows, align="llrrr"), ""]
