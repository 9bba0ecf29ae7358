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
from bisect import bisect_left
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
# A line prefix that may stand before a statement keyword on the same line: markup, then a list number.
_MARKUP_RUN_RE = re.compile(r"[\s>*#\-+`|]*")
_LIST_MARKER_RE = re.compile(r"\d+[.)]\s*")
_NEWLINE_RE = re.compile("\n")
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

    starts = _Starts(raw)
    region_start = 0
    header = starts.after_header()
    if header is not None:
        region_start = header
        notes.append("after answer header")

    for fence_open, body_start, lang in _fences(raw, region_start):
        body_end = raw.find("```", body_start)
        start = starts.find(body_start, len(raw) if body_end < 0 else body_end)
        if start is None:
            continue
        if lang and lang.lower() not in ("sql", "postgres", "postgresql", "psql", "pgsql", "plpgsql", "sqlite", "mysql"):
            notes.append(f"fence labelled {lang!r}")
        return _finish(raw, start, notes, fenced=True, prefix=raw[region_start:fence_open])

    start = starts.find(region_start, len(raw))
    if start is None and region_start:
        start = starts.find(0, len(raw))
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
    starts = _Starts(rest)
    while pos < len(rest):
        start = starts.find(pos, len(rest))
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


class _Starts:
    """Where a statement may start in one text.

    The statement keywords are found once; each is judged in time independent of the length of its line
    and of how many headers precede it, so extraction stays linear in the output (6,000 repeated
    ``答案：`` headers, or one long line of implausible keywords, once took minutes).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.matches = list(_KEYWORD_RE.finditer(text))
        self.positions = [m.start() for m in self.matches]
        self._newlines = [m.start() for m in _NEWLINE_RE.finditer(text)]
        # prefix start -> [first comment opener or -1, searched up to, markup-only prefix ends (2)]
        self._line_facts: dict[int, list[int]] = {}
        self._found: int | None = None  # after_header's memo: a keyword plausible from its line start
        self._scanned = 0  # ... and how far the matches were searched for one

    def find(self, lo: int, hi: int) -> int | None:
        """Index of the first plausible statement keyword in text[lo:hi], or None."""
        for i in range(bisect_left(self.positions, lo), len(self.matches)):
            if self.matches[i].end() > hi:
                return None
            if self._plausible(i, lo, hi):
                return self.positions[i]
        return None

    def after_header(self) -> int | None:
        """End of the first answer header that a plausible statement start follows, or None.

        A keyword after the first one past a header reads the same from the header as from its own line
        start (the header line holds no comment, and the first keyword rules out a markup-only prefix),
        so one forward search, shared by all headers, answers for them.
        """
        n = len(self.text)
        for header in _ANSWER_HEADER_RE.finditer(self.text):
            end = header.end()
            i = bisect_left(self.positions, end)
            if i == len(self.positions):
                return None
            if self._plausible(i, end, n) or self._plausible_from_line(i + 1) is not None:
                return end
        return None

    def _plausible_from_line(self, i: int) -> int | None:
        """The first match at index >= i that is plausible from its line start (i never decreases)."""
        if self._found is not None and self._found >= i:
            return self._found
        for j in range(max(i, self._scanned), len(self.matches)):
            if self._plausible(j, 0, len(self.text)):
                self._found = self._scanned = j
                return j
        self._found, self._scanned = None, len(self.matches)
        return None

    def _plausible(self, i: int, lo: int, hi: int) -> bool:
        m = self.matches[i]
        k = m.start()
        nl = bisect_left(self._newlines, k)
        start = max(self._newlines[nl - 1] + 1 if nl else 0, lo)
        in_comment, run_end, marker_end = self._facts(start, k)
        if in_comment:  # a keyword after -- or /* on its line
            return False
        if not self._plausible_prefix(start, k, run_end, marker_end):
            return False
        guard = _GUARD_RE.get(m.group(1).upper())
        return guard is None or bool(guard.match(self.text[m.end():min(hi, m.end() + 400)].split("\n\n", 1)[0]))

    def _facts(self, start: int, k: int) -> tuple[bool, int, int]:
        """For text[start:k] on one line: does it hold a comment opener; where may a markup-only prefix end."""
        facts = self._line_facts.get(start)
        if facts is None:
            nl = bisect_left(self._newlines, start)
            line_end = self._newlines[nl] if nl < len(self._newlines) else len(self.text)
            run_end = _MARKUP_RUN_RE.match(self.text, start, line_end).end()  # type: ignore[union-attr]
            marker = _LIST_MARKER_RE.match(self.text, run_end, line_end)
            facts = [-1, start, run_end, marker.end() if marker else -1]
            self._line_facts[start] = facts
        comment, searched, run_end, marker_end = facts
        if comment < 0 and searched < k:  # extend the search: each character of a line is searched once
            lo = max(start, searched - 1)
            found = [c for c in (self.text.find("--", lo, k), self.text.find("/*", lo, k)) if c >= 0]
            facts[0], facts[1] = (min(found) if found else -1), k
            comment = facts[0]
        return 0 <= comment and comment + 2 <= k, run_end, marker_end

    def _plausible_prefix(self, start: int, k: int, run_end: int, marker_end: int) -> bool:
        """May a statement start at ``k`` after text[start:k] on the same line?"""
        if k in (run_end, marker_end):  # only markup: "> ", "- ", "1. ", "**"
            return True
        j = k - 1
        while j >= start and self.text[j].isspace():
            j -= 1
        if j < start or self.text[j] in ":：`":
            return True
        # Chinese prose followed directly by SQL: "答案是 SELECT ..." / "查询如下SELECT ..."
        return bool(_HAS_CJK_RE.match(self.text[j]))


def _scan(text: str, pos: int, *, stop_at_fence: bool, stop_at_prose: bool) -> tuple[int, str]:
    """Scan one statement from ``pos``; return (end index, what ended it).

    What ended it: ';' (index of the ';'), 'fence' (index of the closing ```), 'prose' (index of the
    blank line or header before the prose), or 'eof' (len(text)). Literals, quoted identifiers, comments
    and dollar quotes are PostgreSQL's (``harness.sql.scanner``).
    """
    stops = ";" + ("`" if stop_at_fence else "") + ("\n" if stop_at_prose else "")
    nonblank = _NonBlank(text)
    for i in top_level(text, stops, pos):
        c = text[i]
        if c == ";":
            return i, ";"
        if c == "`" and text.startswith("```", i):
            return i, "fence"
        if c == "\n" and _prose_after(text, i, nonblank):
            return i, "prose"
    return len(text), "eof"


class _NonBlank:
    """The first non-blank line at or after a position; one search per stretch of blank lines, so a
    statement followed by 100,000 empty lines is read in linear time."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._from = -1
        self._match: re.Match[str] | None = None

    def at(self, pos: int) -> re.Match[str] | None:
        if not (0 <= self._from <= pos and (self._match is None or pos <= self._match.start())):
            self._from, self._match = pos, _NONBLANK_LINE_RE.search(self.text, pos)
        return self._match


def _prose_after(text: str, nl: int, nonblank: _NonBlank) -> bool:
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
    m = nonblank.at(nl + 1)
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
