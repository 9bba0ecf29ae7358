"""Self-contained HTML reports: one file, no external URL, no JavaScript.

Plots are drawn with matplotlib's object API (``Figure``: no pyplot, no global backend state,
fine headless) and embedded as inline SVG, each inside ``<figure class="plot" id="plot-…">``.
SVG text is kept as text (``svg.fonttype: none``) so the browser draws it with the page's
font fallback list, which includes the usual CJK fonts: Chinese renders wherever the viewer
has such a font, even if the machine that wrote the report had none. The page is a Jinja2 template
(templates/report.html.j2) with autoescaping: everything from a run (questions, SQL, model output) is
HTML-escaped, and shown through ``visible_text`` so that invisible or bidi characters appear as escapes.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jinja2
import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure

from harness.gate.gate import flip_counts
from harness.report.records import (
    Run,
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


def _short(label: str, width: int = 28) -> str:
    label = visible_text(label)  # plot text is drawn by matplotlib, outside the template
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
    ax.set_xticks(range(len(tags)), [_short(t) for t in tags], rotation=30 if len(tags) > 5 else 0, ha="right" if len(tags) > 5 else "center")
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


# ---------------------------------------------------------------- page

@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=True,  # every value is HTML-escaped unless marked Markup (our CSS and matplotlib's SVG)
        finalize=_visible,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )
    env.filters["visible"] = visible_text
    return env.get_template("report.html.j2")


def _visible(value: Any) -> Any:
    """Every text shown passes through ``visible_text``: NUL and bidi controls appear as escapes."""
    return visible_text(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def _figures(runs: Sequence[Run]) -> list[dict[str, Any]]:
    plots = (("plot-accuracy-by-tag", "Execution accuracy by tag", plot_accuracy_by_tag, "no tags in these runs"),
             ("plot-status", "Status breakdown (share of questions)", plot_status_breakdown, "no data"),
             ("plot-tokens", "Generated tokens per question", plot_tokens, "no data"),
             ("plot-latency", "Latency per question", plot_latency, "no timings recorded"))
    figures = []
    for plot_id, caption, draw, empty in plots:
        fig = draw(runs)
        svg = Markup(_svg(fig, plot_id)) if fig is not None else None  # matplotlib escapes its SVG text
        figures.append({"id": plot_id, "caption": caption, "svg": svg, "empty": empty})
    return figures


def _render(title: str, shown: Sequence[Run], **context: Any) -> str:
    return _template().render(
        title=title, css=Markup(CSS), colors=STATUS_COLORS, figures=_figures(shown), status_names=status_names(shown),
        flag_names=sorted({f for r in shown for f in r.summary.flag_counts}), **context) + "\n"


def _gate_context(d: GateDecision) -> dict[str, Any]:
    cfg = d.config
    rows = [
        ("execution accuracy", d.baseline_accuracy, d.candidate_accuracy, f"≥ {-cfg.max_accuracy_drop * 100:+.1f} pt"),
        ("degenerate rate", d.baseline_degenerate_rate, d.candidate_degenerate_rate,
         f"≤ {cfg.max_degenerate_rise * 100:+.1f} pt"),
        ("refused rate", d.baseline_refused_rate, d.candidate_refused_rate, f"≤ {cfg.max_refused_rise * 100:+.1f} pt"),
    ]
    paired = None
    if d.paired and d.mcnemar_p is not None and d.ci_low is not None and d.ci_high is not None:
        paired = (f"Paired on {d.n_paired} questions: {flip_counts(d.mcnemar_b or 0, d.mcnemar_c or 0)}; "
                  f"exact McNemar p = {d.mcnemar_p:.3g} (alpha {cfg.alpha:g}); "
                  f"{1 - cfg.alpha:.0%} paired-bootstrap CI of the accuracy difference "
                  f"[{d.ci_low * 100:+.1f}, {d.ci_high * 100:+.1f}] pt.")
    return {"gate_rows": rows, "paired_text": paired}


def _flip_rows(runs: Sequence[Run], decision: GateDecision | None) -> list[tuple[Flip, Any, Any]] | None:
    flips = compare_flips(runs, decision) if len(runs) >= 2 else None
    if flips is None:
        return None
    base = {r.id: r for r in runs[0].items}
    cand = {r.id: r for r in runs[1].items}
    return [(f, base.get(f.id), cand.get(f.id)) for f in flips]


# ---------------------------------------------------------------- public

def render_run_html(run: Run) -> str:
    """One run: metrics, plots (status, accuracy by tag, tokens, latency) and every question."""
    return _render(f"txt2sql: {run.summary.model}", [run], run=run)


def render_compare_html(runs: Sequence[Run], decision: GateDecision | None = None) -> str:
    """Several runs side by side: metrics, gate verdict (if given), plots and the flips table.

    Plots: execution accuracy by tag (grouped bars), status breakdown per run (stacked bars),
    generated tokens and per-question latency (box plots). The flips table is between the first
    two runs (baseline first); ``decision``, when given, must be ``decide(runs[0], runs[1])``.
    """
    if not runs:
        raise ValueError("render_compare_html needs at least one run")
    flips = _flip_rows(runs, decision)
    n_broken = sum(1 for f, _, _ in flips or () if not f.fixed)
    return _render("txt2sql comparison", runs, runs=runs, decision=decision, warning=benchmark_mismatch(runs),
                   flips=flips, flip_counts=flip_counts(n_broken, len(flips or ()) - n_broken),
                   **(_gate_context(decision) if decision is not None else {"gate_rows": [], "paired_text": None}))
