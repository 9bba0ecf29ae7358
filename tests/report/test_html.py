from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from harness.gate import decide
from harness.report.html import RUN_COLORS, STATUS_COLORS, render_compare_html, render_run_html
from harness.report.records import Run
from tests.runbuilder import make_run

PLOT_IDS = ("plot-accuracy-by-tag", "plot-status", "plot-tokens", "plot-latency")
CHROMIUM = "/usr/bin/chromium"


class Dom(HTMLParser):
    """Records, for every element with an id, its tag and the tags and text found inside it."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "source", "wbr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.by_id: dict[str, dict] = {}
        self.tag_counts: dict[str, int] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for _, el_id in self.stack:
            if el_id:
                self.by_id[el_id]["inside"].append(tag)
        self.tag_counts[tag] = self.tag_counts.get(tag, 0) + 1
        el_id = attrs.get("id")
        if el_id and not (self.stack and self.stack[-1][0] == "svg") and tag != "svg" and not self._in_svg():
            self.by_id[el_id] = {"tag": tag, "class": attrs.get("class", ""), "inside": [], "text": []}
        else:
            el_id = None
        if tag not in self.VOID:
            self.stack.append((tag, el_id))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k][0] == tag:
                del self.stack[k:]
                break

    def handle_data(self, data):
        for _, el_id in self.stack:
            if el_id:
                self.by_id[el_id]["text"].append(data)

    def _in_svg(self) -> bool:
        return any(t == "svg" for t, _ in self.stack)

    def text_of(self, el_id: str) -> str:
        return "".join(self.by_id[el_id]["text"])


def assert_plots_present(dom: Dom) -> None:
    for plot_id in PLOT_IDS:
        assert plot_id in dom.by_id, f"plot {plot_id} missing"
        el = dom.by_id[plot_id]
        assert el["tag"] == "figure" and "plot" in el["class"].split()
        inside = el["inside"]
        assert "svg" in inside, f"{plot_id} has no <svg>"
        assert inside.count("path") + inside.count("rect") >= 3, f"{plot_id}'s svg draws nothing"


def assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower().replace("&lt;script", "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "@import" not in text


@pytest.fixture(scope="module")
def compare_html(base_run: Run, tuned_run: Run) -> str:
    return render_compare_html([base_run, tuned_run], decide(base_run, tuned_run))


def test_compare_html_has_plots_and_flips(compare_html: str, base_run: Run, tuned_run: Run) -> None:
    dom = Dom(compare_html)
    assert_plots_present(dom)
    assert dom.tag_counts["svg"] == len(PLOT_IDS)
    d = decide(base_run, tuned_run)
    assert d.flips, "the constructed runs must differ"
    flips = dom.by_id["flips"]
    assert flips["tag"] == "table"
    assert flips["inside"].count("tr") == len(d.flips) + 1  # header + one row per flip
    text = dom.text_of("flips")
    assert "→ fixed" not in text and "→ broken" not in text  # one vocabulary: a flip is fixed or broken
    n_broken = sum(not f.fixed for f in d.flips)
    assert f"{n_broken} broken (correct → wrong), {len(d.flips) - n_broken} fixed (wrong → correct)" in compare_html
    for flip in d.flips:
        assert flip.question.split("：")[0] in text
    assert "gate" in dom.by_id and ("FAIL" in dom.text_of("gate") or "PASS" in dom.text_of("gate"))


def test_html_is_self_contained_and_escaped(compare_html: str, base_run: Run) -> None:
    assert_self_contained(compare_html)
    assert "<script>alert" not in compare_html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; 西湖区 | 有多少 &amp; 个公园？" in compare_html
    run_html = render_run_html(base_run)
    assert_self_contained(run_html)
    assert "<script>alert" not in run_html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; 西湖区 | 有多少 &amp; 个公园？" in run_html
    assert "SELECT &#39;&lt;b&gt;&#39; || name FROM poi WHERE a &lt; 3 AND b &gt; 2;" in run_html


def test_svg_ids_do_not_collide_between_plots(compare_html: str) -> None:
    ids = re.findall(r'\sid="([^"]+)"', compare_html)
    assert len(ids) == len(set(ids)), "duplicate element ids: clip paths of one plot would apply to another"
    refs = set(re.findall(r'(?:url\(#|href="#)([^)"]+)', compare_html))
    assert refs and refs <= set(ids), f"references to missing ids: {sorted(refs - set(ids))[:5]}"


def test_run_html_lists_every_question(base_run: Run) -> None:
    dom = Dom(render_run_html(base_run))
    assert_plots_present(dom)
    table = dom.by_id["questions"]
    assert table["inside"].count("tr") == len(base_run.items) + 1
    for r in base_run.items:
        assert f"q-{r.id}" in dom.by_id
        assert r.status in dom.text_of(f"q-{r.id}")
    assert "unknown_column" in dom.text_of("questions")
    assert "gold_error" in dom.text_of("q-62")


def test_compare_html_without_per_question_results(base_run: Run, tuned_run: Run) -> None:
    summary_only = Run(tuned_run.path, tuned_run.summary, ())
    dom = Dom(render_compare_html([base_run, summary_only], None))
    assert "Not available" in dom.text_of("flips")
    assert "plot-accuracy-by-tag" in dom.by_id and "svg" in dom.by_id["plot-accuracy-by-tag"]["inside"]


def test_compare_html_warns_about_different_benchmarks(base_run: Run, tuned_run: Run) -> None:
    other = make_run(tuned_run.items, sha="f" * 64, model="lora:x")
    page = render_compare_html([base_run, other])
    assert 'class="warning"' in page and "not over the same benchmark" in page


def test_three_runs_grouped(base_run: Run, tuned_run: Run) -> None:
    third = make_run(tuned_run.items[:20], model="lora:checkpoint-800", path="runs/ckpt800")
    dom = Dom(render_compare_html([base_run, tuned_run, third]))
    assert_plots_present(dom)
    assert "runs/ckpt800"[5:] in dom.text_of("metrics")


# ------------------------------------------------------------------ headless Chromium

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} not found: install Debian's `chromium` to check the report renders",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--no-first-run", *args]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def compare_file(tmp_path_factory: pytest.TempPathFactory, compare_html: str) -> Path:
    path = tmp_path_factory.mktemp("report") / "compare.html"
    path.write_text(compare_html, encoding="utf-8")
    return path


@needs_chromium
def test_chromium_dom_has_plots_and_flips(compare_file: Path, tmp_path: Path) -> None:
    dom_text = chromium(tmp_path, "--dump-dom", compare_file.as_uri()).stdout
    assert "</html>" in dom_text, "chromium did not print the DOM"
    dom = Dom(dom_text)
    assert_plots_present(dom)
    assert dom.by_id["flips"]["tag"] == "table"
    assert dom.by_id["flips"]["inside"].count("tr") >= 2
    assert "西湖区" in dom.text_of("flips")


@needs_chromium
def test_chromium_screenshot_shows_the_plots(compare_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "compare.png"
    chromium(tmp_path, "--window-size=1300,1400", f"--screenshot={png}", compare_file.as_uri())
    assert png.is_file() and png.stat().st_size > 30_000, "screenshot missing or nearly empty"
    pixels = mpimg.imread(png)[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the page is drawn"
    # Colours that only the plots use, drawn by the browser from the inline SVGs: the first run's
    # bars (accuracy by tag) and the "correct" segments of the status plot.
    for name, color in (("accuracy-by-tag bars", RUN_COLORS[0]), ("status bars", STATUS_COLORS["correct"])):
        rgb = np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        count = int((np.abs(pixels - rgb) < 0.03).all(axis=-1).sum())
        assert count > 2_000, f"{name} not visible in the screenshot ({count} pixels of {color})"


def test_model_output_cannot_reach_the_page_unescaped(tmp_path) -> None:
    """Every field a model or benchmark writes goes through the autoescaping template, flags and
    error details included, and invisible characters come out as escapes."""
    from tests.runbuilder import item
    hostile = '"><img src=x onerror=alert(1)><script>x</script>\u202e\x00'
    r = item(1, "wrong_result", question=hostile, predicted_sql=hostile, flags=("unknown_column",))
    r = r.__class__(**{**r.__dict__, "raw_output": hostile, "error": hostile, "diff": hostile,
                       "flag_details": {"unknown_column": hostile}, "tags": (hostile,)})
    page = render_run_html(make_run([r], model=hostile, path=str(tmp_path / "run")))
    assert "<script>x" not in page and "<img" not in page and '"><img' not in page
    assert "\u202e" not in page and "\x00" not in page
    assert "\\u202e" in page and "\\x00" in page


def test_reports_say_what_each_run_ran(base_run: Run, tuned_run: Run) -> None:
    import dataclasses

    from harness.models.base import ModelInfo
    from harness.report.records import RunInfo
    info = RunInfo(ModelInfo("SmolLM2-135M-Instruct", "lora", "bfloat16", "adapters/reference", "SmolLM2-135M-Instruct"),
                   template="seed-zh", max_new_tokens=256, batch_size=8, harness_version="0.1.0", git_commit="abc")
    run = dataclasses.replace(tuned_run, summary=dataclasses.replace(tuned_run.summary, run=info))
    page = render_compare_html([base_run, run])
    assert info.describe() in page and "not recorded" in page  # the constructed base run has no record
    assert f'<p id="run-info">ran: {info.describe()}</p>' in render_run_html(run)
