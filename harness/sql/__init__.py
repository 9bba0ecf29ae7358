"""SQL text handling: extraction from raw model output and schema checks."""

from harness.sql.extract import Extracted, extract_sql, split_statements
from harness.sql.schema import (
           IdentifierCheck,
           SchemaCatalog,
           SchemaParseError,
           check_identifiers,
           parse_error,
)

__all__ = ["Extracted", "extract_sql", "split_statements", "IdentifierCheck", "SchemaCatalog",
           "SchemaParseError", "check_identifiers", "parse_error"]
