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
    name: str
    schema_path: Path
    variants: tuple[DataVariant, ...]

    @property
    def schema_sql(self) -> str:
        return self.schema_path.read_text(encoding="utf-8")


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
