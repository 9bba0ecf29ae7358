"""Import GeoSQL-Bench (syntax-level SQL generation questions) as a benchmark directory.

GeoSQL-Bench (GitHub HaoyueJiao/GeoSQL-Eval, MIT licence) asks one PostGIS function per question, in
Chinese, with gold SQL over *literal* geometries (``ST_GeomFromText('POINT(1 2)')``). Its queries need
no tables, only an empty database with PostGIS, so the imported directory is::

    schema.sql    CREATE EXTENSION IF NOT EXISTS postgis; plus raster/topology/sfcgal where the server has them
    test.jsonl    one question per source line (the split name is ``test`` unless ``split=`` says otherwise)
    LICENSE       the dataset's MIT licence, copied as is
    README.md     origin, licence, what was kept from each line and why

Each source line ``{"new_id", "function", "question", "sql", "generation_strategy_code", ...}`` becomes::

    {"id": "<new_id>", "question": ..., "answer": <sql>, "tags": [<function>, <strategy>],
     "context": <EMPTY_DB_CONTEXT>, "question_en": ...}

The split is ``test`` because GeoSQL-Bench is an evaluation set: nothing of it should be trained on.
Import the Explicit and the Underspecified file into two directories (or pass ``split=`` to put both in
one directory, e.g. ``explicit`` and ``underspecified``); their golds are the same, the phrasing differs.

The optional extensions are created by a ``DO`` block at load time, each in its own sub-transaction:
the directory stays portable (a server without ``postgis_sfcgal`` still loads it), and golds that need
a missing extension fail there as ``gold_error``, which is what they are: not the model's fault.

The recorded ``execution_result`` is *not* imported: it was produced on the authors' PostGIS, and 240
of the golds that run here print differently (geometry in binary form, newer versions); the harness
runs every gold on the evaluation server instead.

>>> _split_name("Syntax-level_SQL_Generation_Question_Explicit.jsonl", None)
'test'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.benchmark.jsonl import read_jsonl, text_field
from harness.errors import BenchmarkError

DEFAULT_SPLIT = "test"
ORIGIN = ("GitHub HaoyueJiao/GeoSQL-Eval, folder GeoSQL-Bench/, "
          "commit d5d554cb9ef266f06447db3a69fb9162436ea3fb")
LICENCE_NAME = "MIT"
README_TITLE = "# GeoSQL-Bench (imported)"

#: Extensions some golds use besides postgis. Created only where the server offers them.
OPTIONAL_EXTENSIONS = ("postgis_raster", "postgis_topology", "postgis_sfcgal")

#: The prompt context of every item: there is no schema to show, only the database's nature.
EMPTY_DB_CONTEXT = ("-- 空的 PostGIS 数据库（PostgreSQL + PostGIS 3），没有用户表。\n"
                    "-- An empty PostGIS database: no user tables. Queries use literal geometries only, "
                    "e.g. ST_GeomFromText('POINT(1 2)'), 'LINESTRING(0 0,1 1)'::geometry.")

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote; ``describe()`` is what ``txt2sql import`` prints."""

    source: Path
    out: Path
    split: str
    items: int
    functions: int
    strategies: tuple[tuple[str, int], ...]
    optional_extensions: tuple[str, ...]
    top_functions: tuple[tuple[str, int], ...] = field(default=())

    @property
    def split_file(self) -> Path:
        return self.out / f"{self.split}.jsonl"

    def describe(self) -> str:
        strategies = ", ".join(f"{s} {n}" for s, n in self.strategies) or "none"
        return "\n".join([
            f"imported {self.items} questions from {self.source}",
            f"  into {self.out}: schema.sql, {self.split_file.name}, LICENSE ({LICENCE_NAME}), README.md",
            f"  {self.functions} distinct PostGIS functions; generation strategies: {strategies}",
            f"  most asked: {', '.join(f'{f} ({n})' for f, n in self.top_functions) or 'none'}",
            f"  schema.sql creates postgis, and {', '.join(self.optional_extensions)} where the server has them",
            f"  evaluate: txt2sql eval --benchmark {self.out} --split {self.split} --model replay:PRED.jsonl",
        ])


def import_geosql_bench(src: Path, out: Path, *, dataset_root: Path | None = None,
                        split: str | None = None) -> ImportReport:
    """Read one GeoSQL-Bench jsonl (Explicit or Underspecified) and write a benchmark directory at ``out``.

    ``dataset_root`` is where ``LICENSE`` (required: MIT asks that it travel with the data) and
    ``SOURCE.md`` (optional: the origin line) lie; default: the folder of ``src``.

    Every line is validated before anything is written; the directory is built in a temporary sibling
    and renamed into place, so a failed import leaves nothing behind. An existing ``out`` is replaced only
    if it is itself a GeoSQL-Bench import (its README says so), never an arbitrary directory.
    """
    src = Path(src)
    out = Path(out)
    root = Path(dataset_root) if dataset_root is not None else src.parent
    split_name = _split_name(src.name, split)
    if not src.is_file():
        raise BenchmarkError(src, "not found. Pass a GeoSQL-Bench jsonl, e.g. ../shared/datasets/geosql-bench/"
                                  "Syntax-level_SQL_Generation_Question_Explicit.jsonl")
    licence = root / "LICENSE"
    if not licence.is_file():
        raise BenchmarkError(licence, f"not found: the {LICENCE_NAME} licence must be copied with the data. "
                                      "Hint: pass dataset_root= the folder holding GeoSQL-Bench's LICENSE.")
    _check_out(out)

    items = list(_convert(src))
    if not items:
        raise BenchmarkError(src, "holds no questions")
    origin = _origin(root / "SOURCE.md")
    functions = Counter(item["tags"][0] for item in items)
    strategies = Counter(item["tags"][1] for item in items if len(item["tags"]) > 1)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / "schema.sql").write_text(schema_sql(), encoding="utf-8")
        with (tmp / f"{split_name}.jsonl").open("w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
        shutil.copyfile(licence, tmp / "LICENSE")
        (tmp / "README.md").write_text(_readme(src, split_name, len(items), functions, strategies, origin),
                                       encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a benchmark directory is ordinary data
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportReport(source=src, out=out, split=split_name, items=len(items), functions=len(functions),
                        strategies=tuple(sorted(strategies.items())), optional_extensions=OPTIONAL_EXTENSIONS,
                        top_functions=tuple(functions.most_common(5)))


def schema_sql() -> str:
    """The DDL: postgis always (its absence should fail loudly), the optional extensions where possible.

    A missing or unloadable extension (no control file, or ``postgis_sfcgal`` without libSFCGAL) only
    raises a NOTICE; the golds that need it then fail and are reported as ``gold_error``.
    """
    optional = "\n".join(
        f"    BEGIN\n"
        f"        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = '{ext}') THEN\n"
        f"            CREATE EXTENSION IF NOT EXISTS {ext};\n"
        f"        END IF;\n"
        f"    EXCEPTION WHEN OTHERS THEN\n"
        f"        RAISE NOTICE 'extension {ext} not created: %', SQLERRM;\n"
        f"    END;"
        for ext in OPTIONAL_EXTENSIONS)
    return ("-- GeoSQL-Bench needs no tables: every query uses literal geometries.\n"
            "CREATE EXTENSION IF NOT EXISTS postgis;\n"
            "-- Optional: some golds use raster, topology or SFCGAL functions. Created where available.\n"
            f"DO $geosql$\nBEGIN\n{optional}\nEND\n$geosql$;\n")


# -- reading ---------------------------------------------------------------------------------------

def _convert(src: Path) -> Iterator[dict[str, Any]]:
    seen: dict[str, int] = {}
    for lineno, obj in read_jsonl(src):
        item = _item(obj, src, lineno)
        if item["id"] in seen:
            raise BenchmarkError(src, f"duplicate new_id {item['id']} (first on line {seen[item['id']]})",
                                 line=lineno, field="new_id")
        seen[item["id"]] = lineno
        yield item


def _item(obj: Any, src: Path, lineno: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BenchmarkError(src, f"expected a JSON object, got {type(obj).__name__}", line=lineno)

    question, sql, function = (str(text_field(obj, name, src, lineno)).strip()
                               for name in ("question", "sql", "function"))
    new_id = obj.get("new_id")
    if new_id is None:
        raise BenchmarkError(src, "is missing (the unique item id)", line=lineno, field="new_id")
    if not isinstance(new_id, (int, str)) or isinstance(new_id, bool) or not str(new_id).strip():
        raise BenchmarkError(src, "must be an integer or a string", line=lineno, field="new_id")
    strategy = (text_field(obj, "generation_strategy_code", src, lineno, required=False) or "").strip()
    item: dict[str, Any] = {
        "id": str(new_id).strip(),
        "question": question,
        "answer": sql,
        "tags": [function] + ([strategy] if strategy else []),
        "context": EMPTY_DB_CONTEXT,
    }
    english = obj.get("question_en")
    if isinstance(english, str) and english.strip():
        item["question_en"] = english.strip()  # ignored by the loader; kept for English templates
    return item


def _split_name(filename: str, split: str | None) -> str:
    name = DEFAULT_SPLIT if split is None else split
    if not _SPLIT_NAME.match(name) or name.endswith(".jsonl"):
        raise BenchmarkError(filename, f"split name {name!r} must be a plain file stem such as 'test'",
                             field="split")
    return name


def _origin(source_md: Path) -> str:
    """The origin line of SOURCE.md ('- Origin: ...'), else the origin this importer was written for."""
    if source_md.is_file():
        for line in source_md.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*[-*]\s*Origin:\s*(.+)", line)
            if m:
                return m.group(1).strip().rstrip(".")
    return ORIGIN


# -- writing ---------------------------------------------------------------------------------------

def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchmarkError(out, "exists and is not a directory; pass another --out")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_import(out):
        raise BenchmarkError(out, "exists and is not a GeoSQL-Bench import; refusing to replace it. "
                                  "Pass an empty or new --out directory.")


def _is_previous_import(out: Path) -> bool:
    readme = out / "README.md"
    try:
        return readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_TITLE)
    except OSError:
        return False


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished directory into place; an older import is removed only once the new one is ready."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _readme(src: Path, split: str, n: int, functions: Counter[str], strategies: Counter[str], origin: str) -> str:
    strategy_text = ", ".join(f"`{s}` ({c})" for s, c in sorted(strategies.items())) or "none recorded"
    return f"""{README_TITLE}

Imported by `txt2sql import geosql-bench` from `{src.name}`.

- **Origin:** {origin}.
- **Licence:** {LICENCE_NAME}; see `LICENSE` (copied unchanged). The questions and gold SQL are the
  authors' work; this directory only re-packages them.
- **Split:** `{split}.jsonl`, {n} questions (an evaluation set: do not train on it).
- **Database:** empty. `schema.sql` creates `postgis`, and `{"`, `".join(OPTIONAL_EXTENSIONS)}` where the server
  offers them. Every gold uses literal geometries.
- **Tags:** the PostGIS function under test ({len(functions)} distinct) and the generation strategy
  ({strategy_text}).

## What each line keeps

| GeoSQL-Bench field | here |
|---|---|
| `new_id` (unique per line) | `id` (as a string) |
| `question` (Chinese) | `question` |
| `question_en` | `question_en` (ignored by the harness) |
| `sql` | `answer` (the gold) |
| `function`, `generation_strategy_code` | `tags` |
| `execution_result`, `execution_success`, `error_message` | dropped: golds are re-run on your server |

No difficulty is recorded. Every item has the same short `context`, saying the database is an empty
PostGIS database and the queries use literal geometries.

## Expected gold failures

On PostgreSQL 15 + PostGIS 3.3 about 210 of 3,744 golds fail: functions added after 3.3 (`ST_HasZ`,
`ST_HasM`, `ST_NumCurves`, ...), ambiguous function calls, a `parcels` table the dataset does not ship,
and a few `UPDATE` statements the harness never executes. They are reported as `gold_error` and
excluded from the scores; they are never counted against a model.
"""
