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


def profiled_totals(prof: Any) -> dict[str, float]:
    """Device-kernel and host-operator seconds, and kernel launches, of a finished ``torch.profiler`` run:
    a step whose kernels sum to far less than its wall time is bound by the host."""
    from torch.autograd import DeviceType

    events = prof.key_averages()
    # kernels only: an operator's own "self device time" is its kernels' time again (counted twice before 2026-12-01)
    device = sum(e.self_device_time_total for e in events if getattr(e, "device_type", None) == DeviceType.CUDA)
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)
    return {"device_kernel_s": round(device / 1e6, 3), "kernel_launches": launches}


def print_top_operators(prof: Any, rows: int = 25) -> None:
    """The profiler's operator tables, by self device time and by self host time."""
    for key in ("self_cuda_time_total", "self_cpu_time_total"):
        print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)
