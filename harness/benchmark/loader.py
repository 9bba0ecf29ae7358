"""Load and validate a benchmark directory.

Layout::

    schema.sql                 DDL (may begin with CREATE EXTENSION IF NOT EXISTS postgis;)
    data.sql | data/*.sql      one data file, or several data variants (test-suite execution)
    databases/<name>/...       the same per database, when questions carry a ``db`` field
    <split>.jsonl              {"context"?, "question", "answer", "id"?, "db"?, "tags"?, "difficulty"?}

Everything is validated before anything is returned: a bad line raises one ``BenchmarkError`` naming
file, line and field, and nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from harness.benchmark.jsonl import check_unicode, read_jsonl, read_text, text_field
from harness.benchmark.model import Benchmark, DatabaseSpec, DataVariant, Question
from harness.errors import BenchmarkError

DEFAULT_DB = "default"
BUNDLED_BENCHMARK = Path(__file__).resolve().parents[2] / "fixtures" / "hangzhou"


def default_benchmark_dir() -> Path:
    """The bundled Hangzhou benchmark: ./fixtures/hangzhou when run from a checkout, else the one beside
    the installed package (editable installs)."""
    local = Path("fixtures/hangzhou")
    return local if (local / "schema.sql").is_file() else BUNDLED_BENCHMARK


def load_databases(root: Path) -> dict[str, DatabaseSpec]:
    if (root / "databases").is_dir():
        dbs = {p.name: _database(p.name, p) for p in sorted((root / "databases").iterdir()) if p.is_dir()}
        if not dbs:
            raise BenchmarkError(root / "databases", "has no <name>/schema.sql sub-directories")
        return dbs
    if not (root / "schema.sql").is_file():
        raise BenchmarkError(root, "no schema.sql (nor databases/<name>/schema.sql): not a benchmark directory")
    return {DEFAULT_DB: _database(DEFAULT_DB, root)}


def _database(name: str, folder: Path) -> DatabaseSpec:
    schema = folder / "schema.sql"
    if not schema.is_file():
        raise BenchmarkError(folder, "schema.sql is missing")
    data_dir = folder / "data"
    if data_dir.is_dir():
        files = sorted(p for p in data_dir.iterdir() if p.name.endswith((".sql", ".sql.gz")))
        if not files:
            raise BenchmarkError(data_dir, "holds no *.sql data variants")
        variants = tuple(DataVariant(re.sub(r"\.sql(\.gz)?$", "", p.name), p) for p in files)
    elif (folder / "data.sql").is_file():
        variants = (DataVariant("data", folder / "data.sql"),)
    else:
        variants = (DataVariant("empty", None),)
    return DatabaseSpec(name, schema, read_text(schema), variants)


def available_splits(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.jsonl"))


def load_benchmark(path: Path | str, split: str = "test") -> Benchmark:
    root = Path(path)
    if not root.is_dir():
        raise BenchmarkError(root, "is not a directory. Pass --benchmark DIR (e.g. fixtures/hangzhou).")
    databases = load_databases(root)
    split_file = root / f"{split}.jsonl"
    if not split_file.is_file():
        raise BenchmarkError(split_file, f"not found; splits here: {', '.join(available_splits(root)) or 'none'}")
    questions = _read_questions(split_file, databases)
    return Benchmark(path=root, split=split, questions=tuple(questions), databases=databases,
                     sha256=benchmark_hash(split_file, databases))


def _read_questions(split_file: Path, databases: dict[str, DatabaseSpec]) -> list[Question]:
    questions: list[Question] = []
    seen: dict[str, int] = {}
    contexts: dict[str, str] = {}
    for lineno, obj in read_jsonl(split_file):
        q = _question(obj, split_file, lineno, databases, contexts)
        if q.id in seen:
            raise BenchmarkError(split_file, f"duplicate id {q.id!r} (first on line {seen[q.id]})",
                                 line=lineno, field="id")
        seen[q.id] = lineno
        questions.append(q)
    if not questions:
        raise BenchmarkError(split_file, "holds no questions")
    return questions


def _question(obj: Any, path: Path, lineno: int, databases: dict[str, DatabaseSpec],
              contexts: dict[str, str]) -> Question:
    if not isinstance(obj, dict):
        raise BenchmarkError(path, f"expected a JSON object, got {type(obj).__name__}", line=lineno)

    question = text_field(obj, "question", path, lineno)
    answer = obj.get("answer")
    if answer is None:
        raise BenchmarkError(path, "is missing (the gold SQL)", line=lineno, field="answer")
    golds = [answer] if isinstance(answer, str) else answer
    if not isinstance(golds, list) or not golds or not all(isinstance(g, str) and g.strip() for g in golds):
        raise BenchmarkError(path, "must be SQL text or a non-empty list of SQL texts", line=lineno, field="answer")
    for g in golds:
        check_unicode(g, path, lineno, "answer")
    raw_id = obj.get("id", lineno)
    if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or str(raw_id).strip() == "":
        raise BenchmarkError(path, "must be a string or an integer", line=lineno, field="id")
    db = obj.get("db", DEFAULT_DB if DEFAULT_DB in databases else None)
    if db is None:
        raise BenchmarkError(path, f"is missing; this benchmark has several databases: {', '.join(databases)}",
                             line=lineno, field="db")
    if not isinstance(db, str) or db not in databases:
        raise BenchmarkError(path, f"unknown database {db!r}; known: {', '.join(databases)}", line=lineno, field="db")
    tags = obj.get("tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BenchmarkError(path, "must be a list of strings", line=lineno, field="tags")
    difficulty = obj.get("difficulty")
    if difficulty is not None and not isinstance(difficulty, str):
        raise BenchmarkError(path, "must be a string", line=lineno, field="difficulty")
    context = text_field(obj, "context", path, lineno, required=False)
    if context is None:
        if db not in contexts:
            contexts[db] = context_from_ddl(databases[db].schema_sql)
        context = contexts[db]
    return Question(id=str(raw_id), question=question or "", golds=tuple(g.strip() for g in golds),
                    context=context, db=db, tags=tuple(tags), difficulty=difficulty, source=f"{path}:{lineno}")


_NOISE = re.compile(r"^\s*(CREATE\s+EXTENSION|CREATE\s+(UNIQUE\s+)?INDEX|ALTER\s+TABLE|SET\s|SELECT\s)", re.I)


def context_from_ddl(ddl: str) -> str:
    """The prompt context when a question has none: the DDL's CREATE TABLE and COMMENT statements."""
    code = "\n".join(line for line in ddl.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in re.split(r";\s*\n", code) if s.strip()]
    kept = [s for s in statements if not _NOISE.match(s)]
    return ";\n".join(kept).strip() + (";" if kept else "")


def benchmark_hash(split_file: Path, databases: dict[str, DatabaseSpec]) -> str:
    """sha256 over the split file and every schema/data file: identical hashes mean comparable runs."""
    h = hashlib.sha256()
    files = [split_file] + [f for db in databases.values()
                            for f in [db.schema_path, *(v.path for v in db.variants if v.path)]]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()
