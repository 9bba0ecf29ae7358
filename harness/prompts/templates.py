"""Prompt templates, the ONE definition used by both evaluation and fine-tuning.

The seed's tuned model failed partly because its training prompt and its evaluation prompt differed
(wording, a ```sql fence present only at training, indentation). Here a template renders the prompt, and
the training example is *that same string* followed by the answer, so the two are byte-identical up to
the answer:

>>> t = get_template("seed-zh")
>>> p = t.render("CREATE TABLE t (a int);", "有多少行?")
>>> t.format_training_example("CREATE TABLE t (a int);", "有多少行?", "SELECT count(*) FROM t;", eos="</s>") \\
...     == p + "SELECT count(*) FROM t;</s>"
True
>>> p.endswith("### Answer:\\n")
True
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from harness.benchmark.model import Question
from harness.errors import ModelBackendError
from harness.models.base import Prompt

TEMPLATE_FILE = "txt2sql_template.json"  # written next to an adapter by harness.finetune

_PLACEHOLDER = re.compile(r"\{(context|question)\}")


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes model input, and how a training target is formatted.

    ``text`` holds ``{context}`` and ``{question}`` placeholders (substituted in one pass, so braces in a
    schema or a question are left alone). ``answer_prefix`` is appended after the rendered text: the
    model's answer continues it (e.g. an opening ```sql fence); ``answer_suffix`` closes the answer in
    training targets (e.g. the closing fence). For ``chat`` templates ``system`` is the system message and
    the rendered ``text`` the user message; backends apply the model's chat template (hf) or send the
    messages as they are (openai).
    """

    name: str
    text: str
    chat: bool = False
    system: str = ""
    answer_prefix: str = ""
    answer_suffix: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        found = set(_PLACEHOLDER.findall(self.text))
        missing = {"context", "question"} - found
        if missing:
            raise ModelBackendError(
                f"prompt template '{self.name}' has no {{{sorted(missing)[0]}}} placeholder; "
                "a template needs both {context} and {question}")

    def render_user(self, context: str, question: str) -> str:
        """The template text with both placeholders filled (no answer prefix)."""
        values = {"context": context.strip("\n"), "question": question.strip()}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)

    def render(self, context: str, question: str) -> str:
        """The exact string a completion model sees; the answer starts right after it."""
        return self.render_user(context, question) + self.answer_prefix

    def messages(self, context: str, question: str) -> tuple[tuple[str, str], ...]:
        """(role, content) pairs for chat models; the answer_prefix is not part of chat messages."""
        msgs: list[tuple[str, str]] = []
        if self.system:
            msgs.append(("system", self.system))
        msgs.append(("user", self.render_user(context, question)))
        return tuple(msgs)

    def format_training_example(self, context: str, question: str, answer: str, eos: str = "") -> str:
        """The fine-tuning text: ``render(...)`` + answer + answer_suffix + the tokenizer's eos marker.

        For chat templates fine-tuning should use the tokenizer's chat template on
        ``messages(...) + (("assistant", answer),)``; this plain form is then only a fallback.
        """
        return self.render(context, question) + answer.strip() + self.answer_suffix + eos

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "") -> PromptTemplate:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown or "name" not in data or "text" not in data:
            raise ModelBackendError(
                f"{source or 'template'}: not a txt2sql prompt template (needs 'name' and 'text'"
                + (f"; unknown fields {sorted(unknown)}" if unknown else "") + ")")
        return cls(**data)

    @classmethod
    def load(cls, path: Path | str) -> PromptTemplate:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelBackendError(f"{path}: cannot read prompt template: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelBackendError(f"{path}: a prompt template must be a JSON object")
        return cls.from_dict(data, source=str(path))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


_SEED_ZH = """你是一名PostgreSQL/PostGIS专家。根据下面的数据库表结构，写出回答问题的SQL查询。

### 表结构:
{context}

### 问题:
{question}

### Answer:
"""

_SQLCODER = """### Task
Generate a SQL query to answer [QUESTION]{question}[/QUESTION]

### Database Schema
The query will run on a PostgreSQL database with PostGIS, with the following schema:
{context}

### Answer
Given the database schema, here is the SQL query that answers [QUESTION]{question}[/QUESTION]
"""

_CHAT_SYSTEM = ("你是一名PostgreSQL/PostGIS专家。只输出一条回答问题的SQL查询，以分号结尾，不要解释。"
                "You are a PostgreSQL/PostGIS expert. Reply with one SQL query ending in a semicolon, "
                "and nothing else.")

_CHAT_USER = """### 表结构:
{context}

### 问题:
{question}"""

TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("seed-zh", _SEED_ZH,
                       description="the seed's Chinese prompt; the answer follows '### Answer:' directly, "
                                   "no ```sql fence at training or at evaluation"),
        PromptTemplate("sqlcoder", _SQLCODER, answer_prefix="```sql\n", answer_suffix="\n```",
                       description="defog sqlcoder style: the answer opens a ```sql fence"),
        PromptTemplate("chat", _CHAT_USER, chat=True, system=_CHAT_SYSTEM,
                       description="system + user messages, for instruct models and the openai backend"),
    )
}
DEFAULT_TEMPLATE = "seed-zh"


def get_template(name: str | None = None) -> PromptTemplate:
    """A template by name (default ``seed-zh``), or from a ``.json`` file written by ``PromptTemplate.save``.

    >>> get_template("chatt")
    Traceback (most recent call last):
    ...
    harness.errors.ModelBackendError: Unknown prompt template 'chatt'. Did you mean 'chat'? Available: chat, seed-zh, sqlcoder
    """
    name = name or DEFAULT_TEMPLATE
    if name in TEMPLATES:
        return TEMPLATES[name]
    if name.endswith(".json") and Path(name).is_file():
        return PromptTemplate.load(name)
    close = difflib.get_close_matches(name, TEMPLATES, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ModelBackendError(
        f"Unknown prompt template '{name}'.{hint} Available: {', '.join(sorted(TEMPLATES))}")


def render_prompt(question: Question, template: PromptTemplate) -> Prompt:
    """The Prompt a backend receives for one benchmark question."""
    if template.chat:
        messages = template.messages(question.context, question.question)
        return Prompt(id=question.id, text=messages[-1][1], template=template.name, messages=messages)
    return Prompt(id=question.id, text=template.render(question.context, question.question),
                  template=template.name)
