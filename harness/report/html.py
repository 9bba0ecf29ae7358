"""Self-contained HTML reports: one file, no external URL, no JavaScript.

Plots are drawn with matplotlib's object API (``Figure``: no pyplot, no global backend state,
fine headless) and embedded as inline SVG, each inside ``<figure class="plot" id="plot-…">``.
SVG text is kept as text (``svg.fonttype: none``) so the browser draws it with the page's
font fallback list, which includes the usual CJK fonts: Chinese renders wherever the viewer
has such a font, even if the machine that wrote the report had none. Everything from a run
(questions, SQL, model output) is HTML-escaped.
"""

from __future__ import annotations

import html
import io
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.figure import Figure

from harness.gate.gate import flip_counts
from harness.report.records import (
    ItemResult,
    Run,
    Summary,
    benchmark_mismatch,
    compare_flips,
    status_names,
    tag_names,
    timing_keys,
    timings,
    tokens_out,
)
from harness.scoring.status import STATUS_COLORS
from harness.sql.visible import visible_text

if TYPE_CHECKING:
    from harness.gate.gate import Flip, GateDecision

FONT_STACK = ("system-ui, -apple-system, 'Segoe UI', 'Noto Sans CJK SC', 'Source Han Sans SC', "
              "'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', 'DejaVu Sans', sans-serif")
PLOT_FONTS = ["DejaVu Sans", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
              "PingFang SC", "Microsoft YaHei", "SimHei"]

RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

CSS = f"""
body {{ font-family: {FONT_STACK}; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
pre {{ margin: 0; white-space: pre-wrap; word-break: break-word; max-height: 12em; overflow: auto;
       font-size: 0.85em; background: #f8f8f8; padding: 0.2em 0.4em; }}
.status {{ display: inline-block; padding: 0.1em 0.5em; border-radius: 0.6em; color: #fff; font-size: 0.85em; }}
.flag {{ display: inline-block; padding: 0 0.4em; margin: 0.1em; border: 1px solid #999; border-radius: 0.3em;
        font-size: 0.8em; }}
.verdict {{ font-size: 1.4em; font-weight: bold; }} .pass {{ color: #2e7d32; }} .fail {{ color: #c62828; }}
.note {{ color: #8a6d00; }} .warning {{ background: #fff3cd; padding: 0.5em 1em; border: 1px solid #e0c36a; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1.5em; }}
figure.plot {{ margin: 0; }} figure.plot svg {{ max-width: 100%; height: auto; }}
figcaption {{ font-size: 0.9em; color: #555; }}
tr.broken td:first-child {{ color: #c62828; }} tr.fixed td:first-child {{ color: #2e7d32; }}
"""

_SVG_START = re.compile(r"<svg\b")
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_SVG_ID = re.compile(r'\sid="([^"]+)"')
_SVG_REF = re.compile(r'(url\(#|href="#)([^)"]+)')


def _e(value: object) -> str:
    return html.escape(visible_text("" if value is None else str(value)), quote=True)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


# ---------------------------------------------------------------- plots

def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure, plot_id: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no metadata)."""
    buf = io.StringIO()
    rc: dict[Any, Any] = {
        "svg.fonttype": "none",  # keep text as text: the browser's font fallback renders CJK
        "svg.hashsalt": plot_id,  # ids inside each SVG differ per plot: several share one page
        "font.family": "sans-serif",
        "font.sans-serif": PLOT_FONTS,
    }
    with matplotlib.rc_context(rc), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        warnings.filterwarnings("ignore", message="findfont")
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    match = _SVG_START.search(text)
    if match is None:  # pragma: no cover - matplotlib always writes an <svg> element
        raise RuntimeError("matplotlib wrote no <svg> element")
    return _prefix_ids(_METADATA.sub("", text[match.start():]).strip(), plot_id)


def _prefix_ids(svg: str, prefix: str) -> str:
    """Make every id in ``svg`` unique on the page: matplotlib numbers them per figure
    (``figure_1``, ``axes_1``, clip paths), so two inline plots would otherwise share ids and one
    plot's clip path or marker could be drawn in another."""
    ids = set(_SVG_ID.findall(svg))
    if not ids:
        return svg

    def ref(m: re.Match[str]) -> str:
        name = m.group(2)
        return f"{m.group(1)}{prefix}-{name}" if name in ids else m.group(0)

    svg = _SVG_ID.sub(lambda m: f' id="{prefix}-{m.group(1)}"', svg)
    return _SVG_REF.sub(ref, svg)


def _figure(plot_id: str, caption: str, fig: Figure | None, empty: str = "no data") -> str:
    body = _svg(fig, plot_id) if fig is not None else f'<p class="note">{_e(empty)}</p>'
    cls = "plot" if fig is not None else "plot empty"
    return f'<figure class="{cls}" id="{_e(plot_id)}">{body}<figcaption>{_e(caption)}</figcaption></figure>'


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_accuracy_by_tag(runs: Sequence[Run]) -> Figure | None:
    """Grouped bars: execution accuracy per tag, one bar per run."""
    tags = tag_names(runs)
    if not tags:
        return None
    fig = _new_figure(max(5.0, 0.9 * len(tags) * max(1, len(runs)) ** 0.5 + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(tags))]
        ys = [run.summary.by_tag[t].execution_accuracy if t in run.summary.by_tag else 0.0 for t in tags]
        ax.bar(xs, ys, width, label=_short(run.label), color=RUN_COLORS[k % len(RUN_COLORS)])
    ax.set_xticks(range(len(tags)), tags, rotation=30 if len(tags) > 5 else 0, ha="right" if len(tags) > 5 else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("execution accuracy")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(3, len(runs)), loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(tags) <= 5 else -0.3))
    return fig


def plot_status_breakdown(runs: Sequence[Run]) -> Figure | None:
    """Stacked horizontal bars: share of questions per status, one bar per run."""
    statuses = status_names(runs)
    if not statuses:
        return None
    fig = _new_figure(7.0, 1.2 + 0.5 * len(runs))
    ax = fig.subplots()
    labels = [_short(r.label) for r in runs]
    left = [0.0] * len(runs)
    for status in statuses:
        shares = [r.summary.status_counts.get(status, 0) / (r.summary.n or 1) for r in runs]
        ax.barh(labels, shares, left=left, label=status, color=STATUS_COLORS.get(status, "#999999"))
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.invert_yaxis()
    ax.legend(fontsize=8, ncol=min(4, len(statuses)), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def plot_tokens(runs: Sequence[Run]) -> Figure | None:
    """Box plots of generated tokens per question, one box per run."""
    data = [tokens_out(r) for r in runs]
    if not any(data):
        return None
    fig = _new_figure(max(4.0, 1.4 * len(runs) + 1.5), 3.4)
    ax = fig.subplots()
    _boxes(ax, data, [r.label for r in runs])
    ax.set_ylabel("tokens out per question")
    return fig


def plot_latency(runs: Sequence[Run]) -> Figure | None:
    """Box plots of per-question timings (generate, execute, ...), one panel per timing."""
    keys = timing_keys(runs)
    if not keys:
        return None
    fig = _new_figure(max(4.0, (1.2 * len(runs) + 1.5) * len(keys)), 3.4)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        _boxes(ax, [timings(r, key) for r in runs], [r.label for r in runs])
        ax.set_title(key, fontsize=10)
        ax.set_ylabel("seconds per question")
    return fig


def _boxes(ax, data: list[list[float]], labels: list[str]) -> None:
    positions = [i for i, d in enumerate(data, 1) if d]
    parts = ax.boxplot([d for d in data if d], positions=positions, widths=0.6, patch_artist=True,
                       showfliers=True, flierprops={"markersize": 3})
    for i, box in zip(positions, parts["boxes"], strict=True):
        box.set_facecolor(RUN_COLORS[(i - 1) % len(RUN_COLORS)])
        box.set_alpha(0.6)
    ax.set_xticks(range(1, len(labels) + 1), [_short(x, 18) for x in labels], rotation=15, ha="right")
    ax.set_xlim(0.4, len(labels) + 0.6)
    ax.grid(axis="y", alpha=0.3)


# ---------------------------------------------------------------- tables

def _status_badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#999999")
    return f'<span class="status" style="background:{color}">{_e(status)}</span>'


def _flags(flags: Sequence[str], details: dict[str, str] | None = None) -> str:
    details = details or {}
    return "".join(f'<span class="flag" title="{_e(details.get(f, ""))}">{_e(f)}</span>' for f in flags)


def _pre(text: str | None) -> str:
    return f"<pre>{_e(text)}</pre>" if text else '<span class="note">—</span>'


def _metrics_table(runs: Sequence[Run]) -> str:
    head = ("<tr><th>run</th><th>benchmark / split</th><th>questions (scored)</th><th>execution accuracy</th>"
            "<th>superset</th><th>exact match</th><th>degenerate</th><th>refused</th><th>tokens in / out</th>"
            "<th>generation s</th><th>fixture intact</th></tr>")
    rows = []
    for r in runs:
        s: Summary = r.summary
        intact = "—" if s.fixture_intact is None else ("yes" if s.fixture_intact else "NO")
        rows.append(
            f"<tr><td>{_e(r.label)}</td><td>{_e(s.benchmark)} / {_e(s.split)}</td>"
            f'<td class="num">{s.n} ({s.n_scored})</td><td class="num">{_pct(s.execution_accuracy)}</td>'
            f'<td class="num">{_pct(s.execution_accuracy_superset)}</td><td class="num">{_pct(s.exact_match)}</td>'
            f'<td class="num">{_pct(s.degenerate_rate)}</td><td class="num">{_pct(s.refused_rate)}</td>'
            f'<td class="num">{s.tokens_in:,} / {s.tokens_out:,}</td>'
            f'<td class="num">{s.generation_seconds:.1f}</td><td>{intact}</td></tr>'
        )
    return f'<table id="metrics" class="metrics">{head}{"".join(rows)}</table>'


def _counts_table(table_id: str, title: str, runs: Sequence[Run], names: list[str], counts) -> str:
    if not names:
        return ""
    head = f"<tr><th>{_e(title)}</th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>"
    rows = "".join(
        f"<tr><td>{_e(n)}</td>" + "".join(f'<td class="num">{counts(r).get(n, 0)}</td>' for r in runs) + "</tr>"
        for n in names
    )
    return f'<table id="{table_id}">{head}{rows}</table>'


def _items_table(items: Sequence[ItemResult]) -> str:
    head = ("<tr><th>id</th><th>status</th><th>flags</th><th>tags</th><th>question</th><th>gold SQL</th>"
            "<th>predicted SQL</th><th>error / diff</th></tr>")
    rows = []
    for r in items:
        prediction = r.predicted_sql if r.predicted_sql is not None else r.raw_output
        problem = "\n".join(x for x in (r.error, r.diff) if x)
        rows.append(
            f'<tr class="item {_e(r.status)}" id="q-{_e(r.id)}"><td>{_e(r.id)}</td><td>{_status_badge(r.status)}</td>'
            f"<td>{_flags(r.flags, r.flag_details)}</td><td>{_e(', '.join(r.tags))}</td><td>{_e(r.question)}</td>"
            f"<td>{_pre(r.gold_sql)}</td><td>{_pre(prediction)}</td><td>{_pre(problem)}</td></tr>"
        )
    return f'<table id="questions" class="questions">{head}{"".join(rows)}</table>'


def _flips_table(flips: Sequence[Flip], baseline: Run, candidate: Run) -> str:
    if not flips:
        return '<p id="flips" class="flips">No question changed outcome between the first two runs.</p>'
    base = {r.id: r for r in baseline.items}
    cand = {r.id: r for r in candidate.items}
    head = ("<tr><th>change</th><th>id</th><th>baseline → candidate</th><th>question</th><th>gold SQL</th>"
            "<th>baseline SQL</th><th>candidate SQL</th></tr>")
    rows = []
    for f in flips:
        rb, rc = base.get(f.id), cand.get(f.id)
        rows.append(
            f'<tr class="flip {f.change}"><td>{f.change}</td><td>{_e(f.id)}</td>'
            f"<td>{_status_badge(f.baseline_status)} → {_status_badge(f.candidate_status)}</td>"
            f"<td>{_e(f.question)}</td><td>{_pre(rb.gold_sql if rb else None)}</td>"
            f"<td>{_pre(rb.predicted_sql if rb else None)}</td><td>{_pre(rc.predicted_sql if rc else None)}</td></tr>"
        )
    n_broken = sum(1 for f in flips if not f.fixed)
    return (f"<p>{flip_counts(n_broken, len(flips) - n_broken)}.</p>"
            f'<table id="flips" class="flips">{head}{"".join(rows)}</table>')


def _gate_section(d: GateDecision) -> str:
    cfg = d.config
    verdict = '<span class="verdict pass">PASS</span>' if d.passed else '<span class="verdict fail">FAIL</span>'
    reasons = "".join(
        f'<li class="{"note" if r.startswith("note:") else "fail"}">{_e(r)}</li>' for r in d.reasons
    )
    rows = [
        ("execution accuracy", d.baseline_accuracy, d.candidate_accuracy, f"≥ {-cfg.max_accuracy_drop * 100:+.1f} pt"),
        ("degenerate rate", d.baseline_degenerate_rate, d.candidate_degenerate_rate,
         f"≤ {cfg.max_degenerate_rise * 100:+.1f} pt"),
        ("refused rate", d.baseline_refused_rate, d.candidate_refused_rate, f"≤ {cfg.max_refused_rise * 100:+.1f} pt"),
    ]
    table = "<tr><th></th><th>baseline</th><th>candidate</th><th>change</th><th>allowed</th></tr>" + "".join(
        f'<tr><td>{name}</td><td class="num">{_pct(b)}</td><td class="num">{_pct(c)}</td>'
        f'<td class="num">{(c - b) * 100:+.1f} pt</td><td class="num">{allowed}</td></tr>'
        for name, b, c, allowed in rows
    )
    if d.paired and d.mcnemar_p is not None and d.ci_low is not None and d.ci_high is not None:
        paired = (f"<p>Paired on {d.n_paired} questions: {flip_counts(d.mcnemar_b or 0, d.mcnemar_c or 0)}; "
                  f"exact McNemar p = {d.mcnemar_p:.3g} (alpha {cfg.alpha:g}); "
                  f"{1 - cfg.alpha:.0%} paired-bootstrap CI of the accuracy difference "
                  f"[{d.ci_low * 100:+.1f}, {d.ci_high * 100:+.1f}] pt.</p>")
    else:
        paired = '<p class="note">Paired test not run: no per-question results for one of the runs.</p>'
    return (f'<section id="gate"><h2>Regression gate</h2><p>{verdict} candidate {_e(d.candidate_label)} '
            f"vs baseline {_e(d.baseline_label)}</p><ul>{reasons}</ul>"
            f'<table id="gate-numbers">{table}</table>{paired}</section>')


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def _plots(runs: Sequence[Run]) -> str:
    return (
        '<section id="plots"><h2>Plots</h2><div class="plots">'
        + _figure("plot-accuracy-by-tag", "Execution accuracy by tag", plot_accuracy_by_tag(runs),
                  "no tags in these runs")
        + _figure("plot-status", "Status breakdown (share of questions)", plot_status_breakdown(runs))
        + _figure("plot-tokens", "Generated tokens per question", plot_tokens(runs))
        + _figure("plot-latency", "Latency per question", plot_latency(runs), "no timings recorded")
        + "</div></section>"
    )


# ---------------------------------------------------------------- public

def render_run_html(run: Run) -> str:
    """One run: metrics, plots (status, accuracy by tag, tokens, latency) and every question."""
    s = run.summary
    body = (
        f"<h1>txt2sql: {_e(s.model)} on {_e(s.benchmark)}/{_e(s.split)}</h1>"
        f'<p id="run-info">ran: {_e(s.run.describe())}</p>'
        f'<p class="note">benchmark sha256 {_e(s.benchmark_sha256 or "(none)")}'
        + (f"; written {_e(s.created_at)}" if s.created_at else "") + "</p>"
        + _metrics_table([run])
        + _plots([run])
        + "<h2>Status and flags</h2>"
        + _counts_table("status-counts", "status", [run], status_names([run]), lambda r: r.summary.status_counts)
        + _counts_table("flag-counts", "flag", [run], sorted(s.flag_counts), lambda r: r.summary.flag_counts)
        + f"<h2>Questions ({len(run.items)})</h2>"
        + (_items_table(run.items) if run.items else '<p class="note">No per-question results (summary only).</p>')
    )
    return _page(f"txt2sql: {s.model}", body)


def render_compare_html(runs: Sequence[Run], decision: GateDecision | None = None) -> str:
    """Several runs side by side: metrics, gate verdict (if given), plots and the flips table.

    Plots: execution accuracy by tag (grouped bars), status breakdown per run (stacked bars),
    generated tokens and per-question latency (box plots). The flips table is between the first
    two runs (baseline first); ``decision``, when given, must be ``decide(runs[0], runs[1])``.
    """
    if not runs:
        raise ValueError("render_compare_html needs at least one run")
    warning = benchmark_mismatch(runs)
    body = "<h1>txt2sql comparison</h1>"
    if warning:
        body += f'<p class="warning">{_e(warning)}</p>'
    body += _metrics_table(runs)
    if decision is not None:
        body += _gate_section(decision)
    body += _plots(runs)
    body += "<h2>Status breakdown</h2>" + _counts_table(
        "status-counts", "status", runs, status_names(runs), lambda r: r.summary.status_counts)
    flag_names = sorted({f for r in runs for f in r.summary.flag_counts})
    body += _counts_table("flag-counts", "flag", runs, flag_names, lambda r: r.summary.flag_counts)
    if len(runs) >= 2:
        body += f'<section id="flips-section"><h2>Flips: {_e(runs[0].label)} → {_e(runs[1].label)}</h2>'
        flips = compare_flips(runs, decision)
        if flips is None:
            body += '<p id="flips" class="note">Not available: per-question results are missing for one of the runs.</p>'
        else:
            body += _flips_table(flips, runs[0], runs[1])
        body += "</section>"
    return _page("txt2sql comparison", body)
