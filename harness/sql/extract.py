"""Extraction: the first SQL statement in a model's raw output.

Models wrap SQL in prose, Markdown fences and echoed prompt headers, and base models keep going after
the statement (a second query, an explanation, the next ``### Question:``). The scorer wants exactly
one statement, so this module finds where it starts and where it ends, and says how it ended:

* start: the first statement keyword (SELECT, WITH, and the others in ``STATEMENT_KEYWORDS`` so that
  hostile output such as ``DROP TABLE`` is extracted as-is for the executor to refuse) that sits at the
  start of a line, after a header such as ``### Answer:`` / ``答案：`` / ``Here is the query:``, or
  right after Chinese prose. A fenced block that holds a statement wins over text outside fences, and
  text after an answer header wins over text before it (a model that echoes the prompt echoes its DDL).
* end: a ``;`` outside string literals, quoted identifiers, dollar quotes and comments; a closing fence;
  a blank line followed by prose; a ``###`` header line; or the end of the text.

``terminated`` is True only when a ``;`` or a closing fence ended the statement; the diagnostics read
its absence as truncation.

>>> extract_sql("以下是SQL：\\n```sql\\nSELECT name FROM rfgcpy WHERE name = 'a;b';\\n```")
Extracted(sql="SELECT name FROM rfgcpy WHERE name = 'a;b'", terminated=True, had_fence=True, note='fenced; prose before')
>>> extract_sql("I cannot answer that.").sql is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.sql.scanner import top_level

__all__ = ["Extracted", "extract_sql", "STATEMENT_KEYWORDS", "split_statements"]


@dataclass(frozen=True)
class Extracted:
    """The first statement of a raw output. ``sql`` is None when the output holds no SQL."""

    sql: str | None
    terminated: bool  # a ';' or a closing fence ended the statement before the text ended
    had_fence: bool  # the statement was found inside a ``` fence
    note: str  # how it was found, for humans: "fenced; prose before; 1 more statement dropped"


# Keywords that may begin a statement. Those that are also common English words need a plausible
# continuation (``_GUARDED``) before they count, so "Do note that ..." or "Set the radius ..." do not.
STATEMENT_KEYWORDS: tuple[str, ...] = (
    "SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN",
    "INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "CREATE", "ALTER", "TRUNCATE", "COPY",
    "GRANT", "REVOKE", "SET", "RESET", "SHOW", "BEGIN", "START", "COMMIT", "ROLLBACK", "END", "SAVEPOINT",
    "RELEASE", "ABORT", "DO", "CALL", "VACUUM", "ANALYZE", "ANALYSE", "REINDEX", "CLUSTER", "LOCK",
    "PREPARE", "EXECUTE", "DEALLOCATE", "DECLARE", "FETCH", "CLOSE", "MOVE", "LISTEN", "NOTIFY",
    "UNLISTEN", "LOAD", "DISCARD", "CHECKPOINT", "COMMENT", "SECURITY", "REFRESH", "IMPORT",
)

_W = r"[A-Za-z_\"]"  # start of an identifier
_GUARDED: dict[str, str] = {
    # keyword -> what must follow it (regex, case-insensitive, after whitespace)
    "SELECT": r"(?:[^\s.,;:!?。，；：！？]|;|$)",
    "WITH": r"(?:RECURSIVE\s+)?" + _W + r"[\w\"]*\s*(?:\([^)]*\)\s*)?AS\b",
    "VALUES": r"\(",
    "TABLE": r"[\w\".]+\s*(?:;|$)",
    "EXPLAIN": r"(?:ANALY[SZ]E\b|VERBOSE\b|\(|SELECT\b|WITH\b|INSERT\b|UPDATE\b|DELETE\b)",
    "INSERT": r"INTO\b",
    "UPDATE": r"[\w\".]+\s+(?:AS\s+\w+\s+|\w+\s+)?SET\b",
    "DELETE": r"FROM\b",
    "MERGE": r"INTO\b",
    "DROP": r"(?:TABLE|VIEW|SCHEMA|DATABASE|INDEX|FUNCTION|EXTENSION|ROLE|USER|OWNED|TRIGGER|SEQUENCE|TYPE"
            r"|MATERIALIZED|PROCEDURE|POLICY|RULE|IF)\b",
    "CREATE": r"(?:OR\s+REPLACE\b|TEMP|TEMPORARY|UNLOGGED|TABLE|VIEW|SCHEMA|DATABASE|INDEX|UNIQUE|FUNCTION"
              r"|EXTENSION|ROLE|USER|TRIGGER|SEQUENCE|TYPE|MATERIALIZED|PROCEDURE|POLICY|RULE|SERVER"
              r"|FOREIGN|PUBLICATION|SUBSCRIPTION|LANGUAGE|EVENT|DOMAIN|AGGREGATE|CAST)\b",
    "ALTER": r"(?:TABLE|VIEW|SCHEMA|DATABASE|INDEX|FUNCTION|EXTENSION|ROLE|USER|SYSTEM|DEFAULT|SEQUENCE"
             r"|TYPE|MATERIALIZED|POLICY)\b",
    "TRUNCATE": r"(?:TABLE\b|ONLY\b|[\w\"]+\s*(?:;|,|$|CASCADE\b|RESTART\b))",
    "COPY": r"(?:\(|[\w\".]+\s*(?:\([^)]*\)\s*)?(?:FROM|TO)\b)",
    "GRANT": r"(?:ALL|SELECT|INSERT|UPDATE|DELETE|USAGE|EXECUTE|CREATE|CONNECT|TEMP|TRUNCATE|pg_\w+|\w+\s+TO)\b",
    "REVOKE": r"(?:ALL|SELECT|INSERT|UPDATE|DELETE|USAGE|EXECUTE|CREATE|CONNECT|GRANT)\b",
    "SET": r"(?:SESSION\b|LOCAL\b|ROLE\b|TRANSACTION\b|CONSTRAINTS\b|[\w.]+\s*(?:=|TO\b))",
    "RESET": r"(?:ALL\b|ROLE\b|SESSION\b|[\w.]+\s*(?:;|$))",
    "SHOW": r"(?:ALL\b|[\w.]+\s*(?:;|$))",
    "BEGIN": r"(?:;|$|TRANSACTION\b|WORK\b|ISOLATION\b|READ\b)",
    "START": r"TRANSACTION\b",
    "COMMIT": r"(?:;|$|TRANSACTION\b|WORK\b|AND\b|PREPARED\b)",
    "ROLLBACK": r"(?:;|$|TRANSACTION\b|WORK\b|TO\b|AND\b|PREPARED\b)",
    "END": r"(?:;|$|TRANSACTION\b|WORK\b)",
    "ABORT": r"(?:;|$|TRANSACTION\b|WORK\b)",
    "SAVEPOINT": r"\w+\s*(?:;|$)",
    "RELEASE": r"(?:SAVEPOINT\b|\w+\s*(?:;|$))",
    "DO": r"(?:\$|'|LANGUAGE\b)",
    "CALL": r"[\w.\"]+\s*\(",
    "VACUUM": r"(?:;|$|\(|FULL\b|FREEZE\b|VERBOSE\b|ANALY[SZ]E\b|[\w\".]+\s*(?:;|$))",
    "ANALYZE": r"(?:;|$|\(|VERBOSE\b|[\w\".]+\s*(?:;|$|\())",
    "ANALYSE": r"(?:;|$|\(|VERBOSE\b|[\w\".]+\s*(?:;|$|\())",
    "REINDEX": r"(?:\(|INDEX|TABLE|SCHEMA|DATABASE|SYSTEM)\b",
    "CLUSTER": r"(?:;|$|VERBOSE\b|[\w\".]+\s*(?:;|$|USING\b))",
    "LOCK": r"(?:TABLE\b|[\w\".]+\s*(?:;|$|IN\b))",
    "PREPARE": r"(?:TRANSACTION\b|\w+\s*(?:\(|AS\b))",
    "EXECUTE": r"\w+\s*(?:\(|;|$)",
    "DEALLOCATE": r"(?:PREPARE\b|ALL\b|\w+\s*(?:;|$))",
    "DECLARE": r"\w+\s+(?:BINARY\b|INSENSITIVE\b|ASENSITIVE\b|NO\b|SCROLL\b|CURSOR\b)",
    "FETCH": r"(?:NEXT|PRIOR|FIRST|LAST|ABSOLUTE|RELATIVE|ALL|FORWARD|BACKWARD|FROM|IN|\d+)\b",
    "CLOSE": r"(?:ALL\b|\w+\s*(?:;|$))",
    "MOVE": r"(?:NEXT|PRIOR|FIRST|LAST|ABSOLUTE|RELATIVE|ALL|FORWARD|BACKWARD)\b",
    "LISTEN": r"\w+\s*(?:;|$)",
    "NOTIFY": r"\w+\s*(?:;|,|$)",
    "UNLISTEN": r"(?:\*|\w+\s*(?:;|$))",
    "LOAD": r"'",
    "DISCARD": r"(?:ALL|PLANS|SEQUENCES|TEMP|TEMPORARY)\b",
    "CHECKPOINT": r"(?:;|$)",
    "COMMENT": r"ON\b",
    "SECURITY": r"LABEL\b",
    "REFRESH": r"MATERIALIZED\b",
    "IMPORT": r"FOREIGN\b",
}
_GUARD_RE = {k: re.compile(r"\s*" + v, re.IGNORECASE | re.MULTILINE) for k, v in _GUARDED.items()}
_KEYWORD_RE = re.compile(r"(?<![A-Za-z0-9_$])(" + "|".join(STATEMENT_KEYWORDS) + r")(?![A-Za-z0-9_$])",
                         re.IGNORECASE)

# Headers a model echoes from the prompt just before its answer.
_ANSWER_HEADER_RE = re.compile(
    r"(?im)^[ \t>*#]*(?:#{1,6}[ \t]*)?(?:answer|sql|sql query|query|response|output|assistant"
    r"|答案|回答|答|sql语句|查询语句|查询)[ \t]*(?:[:：][ \t]*|$)")
# A line prefix that may stand before a statement keyword on the same line.
_MARKUP_PREFIX_RE = re.compile(r"^[\s>*#\-+`|]*(?:\d+[.)]\s*)?$")
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n`]*\n?")

# After a blank line, a line that starts like this continues the statement; anything else is prose.
_CONTINUATION_WORDS = frozenset("""
select from where and or not group order by having limit offset union intersect except all distinct
join inner left right full outer cross natural lateral on using as case when then else end in is null
like ilike between exists with asc desc nulls first last fetch window over partition values returning
into set filter within only""".split())
_CONTINUATION_RE = re.compile(r"""^\s*(?:[(),*=<>+\-/|:'";]|--|/\*|[\w".]+\s*(?:[,.()=<>+\-*/|]|::|$))""")
_NONBLANK_LINE_RE = re.compile(r"\S[^\n]*")
_CJK = "\u3000-\u303f\u3400-\u9fff\uff00-\uffef"  # a character class body
_HAS_CJK_RE = re.compile(f"[{_CJK}]")


def extract_sql(raw: str) -> Extracted:
    """The first SQL statement in ``raw``, without fences, prose or anything after it.

    >>> extract_sql("### Answer:\\nSELECT 1; SELECT 2;")
    Extracted(sql='SELECT 1', terminated=True, had_fence=False, note='after answer header; 1 more statement dropped')
    >>> extract_sql("SELECT COUNT(*) FROM rfgcpy WHERE geom AND ssqx AND tya").terminated
    False
    """
    if not raw or not raw.strip():
        return Extracted(None, False, False, "empty output")
    notes: list[str] = []

    region_start = 0
    header = _first_header_followed_by_sql(raw)
    if header is not None:
        region_start = header
        notes.append("after answer header")

    for fence_open, body_start, lang in _fences(raw, region_start):
        body_end = raw.find("```", body_start)
        start = _find_start(raw, body_start, len(raw) if body_end < 0 else body_end)
        if start is None:
            continue
        if lang and lang.lower() not in ("sql", "postgres", "postgresql", "psql", "pgsql", "plpgsql", "sqlite", "mysql"):
            notes.append(f"fence labelled {lang!r}")
        return _finish(raw, start, notes, fenced=True, prefix=raw[region_start:fence_open])

    start = _find_start(raw, region_start, len(raw))
    if start is None and region_start:
        start = _find_start(raw, 0, len(raw))
        notes = []
    if start is None:
        return Extracted(None, False, False, "no SQL statement found")
    return _finish(raw, start, notes, fenced=False, prefix=raw[region_start:start])


def split_statements(text: str) -> list[str]:
    """Split SQL text on ``;`` outside literals, quoted identifiers, dollar quotes and comments.

    >>> split_statements("SELECT 'a;b'; -- c;\\nSELECT 2")
    ["SELECT 'a;b'", '-- c;\\nSELECT 2']
    """
    out: list[str] = []
    pos = 0
    while pos < len(text):
        end, kind = _scan(text, pos, stop_at_fence=False, stop_at_prose=False)
        piece = text[pos:end].strip()
        if piece:
            out.append(piece)
        pos = end + 1 if kind == ";" else len(text)
    return out


# --------------------------------------------------------------------------- internals


def _finish(raw: str, start: int, notes: list[str], *, fenced: bool, prefix: str) -> Extracted:
    end, kind = _scan(raw, start, stop_at_fence=True, stop_at_prose=True)
    sql = raw[start:end].strip()
    if fenced:
        notes.insert(0, "fenced" if kind != "eof" or "```" in raw[end:] else "unclosed fence")
    if prefix.strip().strip("`").strip():
        notes.append("prose before")
    rest = raw[end + (1 if kind == ";" else 3 if kind == "fence" else 0):]
    dropped = _count_dropped(rest)
    if dropped:
        notes.append(f"{dropped} more statement{'s' if dropped > 1 else ''} dropped")
    elif kind == "prose" or rest.strip().strip("`").strip():
        notes.append("text after dropped")
    terminated = kind in (";", "fence")
    if not sql:
        return Extracted(None, terminated, fenced, "; ".join(notes + ["empty statement"]))
    return Extracted(sql, terminated, fenced, "; ".join(notes))


def _count_dropped(rest: str) -> int:
    n = 0
    pos = 0
    while pos < len(rest):
        start = _find_start(rest, pos, len(rest))
        if start is None:
            break
        n += 1
        end, kind = _scan(rest, start, stop_at_fence=True, stop_at_prose=True)
        pos = max(end + 1, start + 1)
    return n


def _fences(raw: str, pos: int) -> list[tuple[int, int, str]]:
    """(opening fence index, body start, language) for each fenced block from ``pos``."""
    out: list[tuple[int, int, str]] = []
    while True:
        m = _FENCE_RE.search(raw, pos)
        if m is None:
            return out
        out.append((m.start(), m.end(), m.group(1)))
        close = raw.find("```", m.end())
        if close < 0:
            return out
        pos = close + 3


def _first_header_followed_by_sql(raw: str) -> int | None:
    for m in _ANSWER_HEADER_RE.finditer(raw):
        if _find_start(raw, m.end(), len(raw)) is not None:
            return m.end()
    return None


def _find_start(text: str, lo: int, hi: int) -> int | None:
    """Index of the first plausible statement keyword in text[lo:hi], or None."""
    for m in _KEYWORD_RE.finditer(text, lo, hi):
        line_start = text.rfind("\n", 0, m.start()) + 1
        prefix = text[max(line_start, lo):m.start()]
        if "--" in prefix or "/*" in prefix:
            continue
        if not _plausible_prefix(prefix):
            continue
        guard = _GUARD_RE.get(m.group(1).upper())
        if guard is not None and not guard.match(text[m.end():min(hi, m.end() + 400)].split("\n\n", 1)[0]):
            continue
        return m.start()
    return None


def _plausible_prefix(prefix: str) -> bool:
    """May a statement start right after this text on the same line?"""
    if _MARKUP_PREFIX_RE.match(prefix):
        return True
    tail = prefix.rstrip()
    if not tail:
        return True
    if tail[-1] in ":：`":
        return True
    # Chinese prose followed directly by SQL: "答案是 SELECT ..." / "查询如下SELECT ..."
    return bool(_HAS_CJK_RE.match(tail[-1]))


def _scan(text: str, pos: int, *, stop_at_fence: bool, stop_at_prose: bool) -> tuple[int, str]:
    """Scan one statement from ``pos``; return (end index, what ended it).

    What ended it: ';' (index of the ';'), 'fence' (index of the closing ```), 'prose' (index of the
    blank line or header before the prose), or 'eof' (len(text)). Literals, quoted identifiers, comments
    and dollar quotes are PostgreSQL's (``harness.sql.scanner``).
    """
    stops = ";" + ("`" if stop_at_fence else "") + ("\n" if stop_at_prose else "")
    for i in top_level(text, stops, pos):
        c = text[i]
        if c == ";":
            return i, ";"
        if c == "`" and text.startswith("```", i):
            return i, "fence"
        if c == "\n" and _prose_after(text, i):
            return i, "prose"
    return len(text), "eof"


def _prose_after(text: str, nl: int) -> bool:
    """Does the line after the newline at ``nl`` end the statement?

    A ``###`` header line always does; otherwise only after a blank line, and only when the next
    non-blank line does not read as SQL (a keyword, punctuation, or an identifier followed by an operator).
    """
    line_end = text.find("\n", nl + 1)
    line = text[nl + 1: len(text) if line_end < 0 else line_end]
    if line.lstrip().startswith("###"):
        return True
    if line.strip():
        return False
    # blank line: find the next non-blank one
    m = _NONBLANK_LINE_RE.search(text, nl + 1)
    if m is None:
        return False
    nxt = m.group(0)
    if nxt.startswith("```"):
        return False  # the fence check handles it
    word = re.match(r"[A-Za-z_]+", nxt)
    if word and word.group(0).lower() in _CONTINUATION_WORDS:
        return False
    if next(top_level(nxt, _CJK), None) is not None:  # Chinese outside string literals and quoted names
        return True
    return not _CONTINUATION_RE.match(nxt)
