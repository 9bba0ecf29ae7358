"""Diagnostics of raw model outputs: loops, truncation, unknown names, invented coordinates.

>>> from harness.diagnose import diagnose, Diagnosis, FLAGS

The names load ``harness.diagnose.core`` on first use (PEP 562), so ``harness.diagnose.loops`` imports
without sqlglot: the generation stop check uses it on machines that only generate (the GPU benchmark).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.diagnose.core import FLAGS, Diagnosis, diagnose

__all__ = ["FLAGS", "Diagnosis", "diagnose"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("harness.diagnose.core"), name)
    raise AttributeError(f"module 'harness.diagnose' has no attribute {name!r}")
