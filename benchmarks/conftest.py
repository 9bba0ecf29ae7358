"""``pytest benchmarks/ --model=...``: each question of each ``*.txt2sql.json`` here is a test item.

The plugin (harness.pytest_plugin) is registered through the ``pytest11`` entry point; naming it here
as well keeps ``pytest benchmarks/`` working from a checkout that was not pip-installed.
"""

import importlib.metadata

if not any(ep.value == "harness.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
    pytest_plugins = ["harness.pytest_plugin"]
