"""Invisible and display-reordering characters are shown as escapes, in the text and in the reports."""

from __future__ import annotations

import io
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from harness.report.console import shorten
from harness.report.html import render_run_html
from harness.sql.visible import INVISIBLE_CATEGORIES, visible_text
from tests.runbuilder import item, make_run

BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)]
OTHER_INVISIBLE = ["\x00", "\x07", "\x1b", "\r", "\x7f", "\x85", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",
                   "\u00ad", "\u2028", "\u2029", "\U000e0041", "\ud800"]


@pytest.mark.parametrize("char", BIDI + OTHER_INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_each_invisible_character_becomes_its_escape(char: str) -> None:
    got = visible_text(f"a{char}b")
    assert char not in got
    assert got == "a" + char.encode("unicode_escape").decode("ascii").replace("\\r", "\\x0d") + "b"


@pytest.mark.parametrize("text", ["SELECT 1;\n\tFROM t", "杭州市西湖区　公园", "a\u00a0b", "🙂", "ST_MakePoint(120.1, 30.2)",
                                  "e\u0301"])
def test_visible_text_is_left_alone(text: str) -> None:
    assert visible_text(text) == text


@given(st.text())
def test_no_invisible_character_survives(text: str) -> None:
    got = visible_text(text)
    assert all(c in "\n\t" or unicodedata.category(c) not in INVISIBLE_CATEGORIES for c in got)


HOSTILE = "SELECT name FROM t WHERE a = '\u202eDROP\u202c'\x00 -- \u2066x\u2069"


def test_html_report_shows_escapes_for_model_output_and_question() -> None:
    run = make_run([item(1, "wrong_result", question="西湖区\u200b有多少个公园？", predicted_sql=HOSTILE)])
    page = render_run_html(run)
    for char in ("\x00", "\u202e", "\u202c", "\u2066", "\u2069", "\u200b"):
        assert char not in page
    assert "\\u202eDROP\\u202c" in page and "\\x00" in page and "西湖区\\u200b有" in page


def test_console_shows_escapes() -> None:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False).print(shorten("西湖区\u202e公园\x00", 60))
    assert out.getvalue().strip() == "西湖区\\u202e公园\\x00"
