"""Every ``>>>`` example in ``harness/`` runs as a test: modules are found by walking the package, so a
new module's examples run without being listed anywhere. Only modules whose source holds ``>>>`` are
imported (the others have no examples), which keeps torch out of the default run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import harness

ROOT = Path(harness.__file__).parent


def modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix="harness."):
        rel = info.name.removeprefix("harness.").replace(".", "/")
        source = ROOT / (f"{rel}/__init__.py" if info.ispkg else f"{rel}.py")
        if source.is_file() and ">>>" in source.read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = modules_with_examples()


def test_examples_are_found_across_the_package() -> None:
    # the walk itself must work: these packages hold examples today
    assert {"harness.sql.extract", "harness.gate.stats", "harness.models.registry",
            "harness.report.console"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 or ">>>" not in (module.__doc__ or ""), f"no example of {name} was collected"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see stdout)"
