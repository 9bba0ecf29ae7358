"""How the perf scripts that measure a set of figures hand them back: indented JSON on stdout and, with
``--out``, the same text in a file. Run as ``python benchmarks/perf/NAME.py``; this directory is then the
first entry of ``sys.path``, so the scripts import this module as ``figures``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def report(figures: dict[str, Any], out: Path | None, *, echo: bool = True) -> None:
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    if echo:
        print(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
