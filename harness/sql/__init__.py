"""SQL text handling: extraction from raw model output and schema checks.

The names below load their module on first use (PEP 562), so ``harness.sql.scanner`` imports without
sqlglot: the generation stop check uses it on machines that only generate (the GPU benchmark).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.sql.extract import Extracted, extract_sql, split_statements
    from harness.sql.schema import (
        IdentifierCheck,
        SchemaCatalog,
        SchemaParseError,
        check_identifiers,
        parse_error,
    )

_MODULES = {"Extracted": "extract", "extract_sql": "extract", "split_statements": "extract",
            "IdentifierCheck": "schema", "SchemaCatalog": "schema", "SchemaParseError": "schema",
            "check_identifiers": "schema", "parse_error": "schema"}
__all__ = ["Extracted", "extract_sql", "split_statements", "IdentifierCheck", "SchemaCatalog",
           "SchemaParseError", "check_identifiers", "parse_error"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"harness.sql.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'harness.sql' has no attribute {name!r}")
