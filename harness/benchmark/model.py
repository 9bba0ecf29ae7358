"""Typed values of the benchmark stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Question:
    """One benchmark item. ``golds`` holds one or more alternative gold SQL queries."""

    id: str
    question: str
    golds: tuple[str, ...]
    context: str
    db: str = "default"
    tags: tuple[str, ...] = ()
    difficulty: str | None = None
    source: str = ""  # "file:line", for error messages

    @property
    def gold(self) -> str:
        return self.golds[0]


@dataclass(frozen=True)
class DataVariant:
    """One data file for a database; test-suite execution runs every gold on every variant."""

    name: str
    path: Path | None  # None: schema only, no data


@dataclass(frozen=True)
class DatabaseSpec:
    """One database of a benchmark: its schema and the data variants loaded on it."""

    name: str
    schema_path: Path
    # The schema file's text, read once when the benchmark loads: the prompt contexts, the fixture (once
    # per variant) and the scorer's catalog (after generation, maybe hours later) all see the same text.
    schema_sql: str
    variants: tuple[DataVariant, ...]

    def variant_label(self, name: str) -> str:
        """How diffs and errors name a data variant: its data file, relative to the database folder,
        or ``schema.sql`` when the data sits in the schema file (the variant has no file of its own).

        >>> spec = DatabaseSpec("default", Path("b/schema.sql"), "", (DataVariant("v1", Path("b/data/v1.sql")),
        ...                     DataVariant("empty", None)))
        >>> spec.variant_label("v1"), spec.variant_label("empty")
        ('data/v1.sql', 'schema.sql')
        """
        variant = next((v for v in self.variants if v.name == name), None)
        if variant is None:
            return name
        if variant.path is None:
            return self.schema_path.name
        try:
            return variant.path.relative_to(self.schema_path.parent).as_posix()
        except ValueError:
            return variant.path.name


@dataclass(frozen=True)
class Benchmark:
    path: Path
    split: str
    questions: tuple[Question, ...]
    databases: dict[str, DatabaseSpec] = field(hash=False)
    sha256: str = ""  # hash of schema, data and split file: runs over different hashes are not compared

    @property
    def name(self) -> str:
        return self.path.name

    def tags(self) -> list[str]:
        return sorted({t for q in self.questions for t in q.tags})
