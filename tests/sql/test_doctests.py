"""The ``>>>`` examples in the extraction, schema, diagnostics and exact-match docstrings run as tests."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "harness.sql.extract", "harness.sql.schema",
    "harness.diagnose", "harness.diagnose.core", "harness.diagnose.literals", "harness.diagnose.truncation",
    "harness.diagnose.loops",
    "harness.scoring.exact",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see stdout)"
