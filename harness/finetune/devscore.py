"""Dev-split scores of a model in training, computed by the harness itself.

With a database (``--dev-db auto|local|docker|DSN``) a checkpoint is scored exactly as ``txt2sql eval``
scores a run: execution accuracy over every data variant, degenerate rate, exact match. Where no PostGIS
can run (a GPU machine with no database), ``--dev-db none`` scores what needs no database: exact match
and the degenerate rate from the same diagnostics. The curve records which metric chose the checkpoint.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.benchmark.model import Question
from harness.errors import Txt2SqlError
from harness.models.base import GenerationConfig, ModelBackend
from harness.prompts.templates import PromptTemplate, render_prompt

log = logging.getLogger(__name__)

NO_DB = "none"


@dataclass(frozen=True)
class DevScore:
    step: int
    n: int
    metric: str  # "execution_accuracy" or "exact_match": the one that picks the best checkpoint
    value: float
    exact_match: float
    degenerate_rate: float
    execution_accuracy: float | None = None


@dataclass(frozen=True)
class DevSet:
    benchmark: Path
    split: str
    questions: tuple[Question, ...]
    db: str = "auto"
    max_new_tokens: int = 192
    batch_size: int = 32


def score_backend(backend: ModelBackend, dev: DevSet, template: PromptTemplate, step: int) -> DevScore:
    """Score ``backend`` on the dev questions: with the database when ``dev.db`` is not ``none``."""
    gen = GenerationConfig(max_new_tokens=dev.max_new_tokens, batch_size=dev.batch_size)
    if dev.db != NO_DB:
        try:
            return _with_database(backend, dev, gen, step)
        except Txt2SqlError as exc:  # no database here: say so once per checkpoint, score without one
            log.warning("dev scoring without a database (%s); choosing checkpoints by exact match", exc)
    return _without_database(backend, dev, template, gen, step)


def _with_database(backend: ModelBackend, dev: DevSet, gen: GenerationConfig, step: int) -> DevScore:
    from harness.pipeline import EvalConfig, evaluate

    ids = frozenset(q.id for q in dev.questions)
    with tempfile.TemporaryDirectory(prefix="txt2sql-dev-") as tmp:
        cfg = EvalConfig(benchmark=dev.benchmark, split=dev.split, model=f"finetune-dev-step-{step}", db=dev.db,
                         out=Path(tmp) / "run", generation=gen, ids=ids, use_cache=False, progress=False)
        s = evaluate(cfg, backend=backend).summary
    return DevScore(step, s.n, "execution_accuracy", s.execution_accuracy, s.exact_match, s.degenerate_rate,
                    s.execution_accuracy)


def _without_database(backend: ModelBackend, dev: DevSet, template: PromptTemplate, gen: GenerationConfig,
                      step: int) -> DevScore:
    from harness.diagnose import diagnose
    from harness.scoring.exact import exact_match
    from harness.sql.extract import extract_sql

    prompts = [render_prompt(q, template) for q in dev.questions]
    outputs = {g.id: g for g in backend.generate(prompts, gen)}
    em = degenerate = 0
    for q in dev.questions:
        g = outputs[q.id]
        extracted = extract_sql(g.text)
        flags = diagnose(g.text, extracted, g.finish_reason, q.question, q.context, None).flags
        degenerate += "degenerate" in flags
        em += bool(extracted.sql) and any(exact_match(gold, extracted.sql or "") for gold in q.golds)
    n = max(1, len(dev.questions))
    return DevScore(step, len(dev.questions), "exact_match", em / n, em / n, degenerate / n)


def in_training_backend(model: Any, tokenizer: Any, template: PromptTemplate, step: int) -> ModelBackend:
    """The model being trained, behind the harness's generation interface (no copy of the weights)."""
    from harness.models.hf import HFBackend

    return HFBackend(model, tokenizer, spec=f"finetune@{step}", fingerprint=f"finetune@{step}", template=template)


def summarise_curve(scores: Sequence[DevScore]) -> DevScore | None:
    """The best checkpoint: highest metric, then lowest degenerate rate, then the earliest step."""
    if not scores:
        return None
    return max(scores, key=lambda s: (s.value, -s.degenerate_rate, -s.step))
