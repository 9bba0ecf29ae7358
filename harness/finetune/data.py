"""Training examples: the evaluation prompt followed by the gold answer and EOS, loss on the answer only.

The seed's recipe went wrong in four ways that each of these choices undoes: its training prompt was not
its evaluation prompt (here both come from one ``PromptTemplate``), it trained on ``labels = input_ids``
over the whole prompt (here the prompt is masked with -100), it padded on the left with id 0 (here the
collator pads on the right, labels with -100, so no pad token is ever a target), and it appended no EOS
(here every answer ends with the tokenizer's EOS, so the model learns to stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.benchmark.model import Question
from harness.errors import ModelBackendError
from harness.prompts.templates import PromptTemplate

IGNORE_INDEX = -100  # the label transformers' loss skips


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def encode_example(tokenizer: Any, template: PromptTemplate, q: Question, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the prompt masked out (-100): the model learns the answer only."""
    eos = tokenizer.eos_token or ""
    if template.chat and getattr(tokenizer, "chat_template", None):
        msgs = [{"role": r, "content": c} for r, c in template.messages(q.context, q.question)]
        prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = prompt + q.gold.strip() + eos
        special = False
    else:
        prompt = template.render(q.context, q.question)
        full = template.format_training_example(q.context, q.question, q.gold, eos=eos)
        special = True
    prompt_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    ids = tokenizer(full, add_special_tokens=special)["input_ids"]
    if ids[:len(prompt_ids)] != prompt_ids:  # a merge across the prompt/answer boundary: mask conservatively
        n = next((i for i, (a, b) in enumerate(zip(ids, prompt_ids, strict=False)) if a != b), len(prompt_ids))
    else:
        n = len(prompt_ids)
    labels = [IGNORE_INDEX] * n + ids[n:]
    if len(ids) > max_length:  # keep the answer: drop from the left of the prompt
        ids, labels = ids[-max_length:], labels[-max_length:]
    return ids, labels


def encode_all(tokenizer: Any, template: PromptTemplate, questions: Sequence[Question],
               max_length: int) -> list[Example]:
    """Every question's training example; an answer that is all masked is a configuration error."""
    examples = []
    for q in questions:
        ids, labels = encode_example(tokenizer, template, q, max_length)
        ex = Example(tuple(ids), tuple(labels))
        if ex.answer_tokens == 0:
            raise ModelBackendError(f"question {q.id}: its answer does not fit in --max-length {max_length} "
                                    "tokens after the prompt; raise --max-length")
        examples.append(ex)
    return examples


class RightPaddingCollator:
    """Pads a batch on the right (labels with -100, attention 0) and counts the real tokens it saw,
    for the tokens/s figure: the counter is exact, unlike samples/s times a mean length."""

    def __init__(self, pad_id: int, *, width: int | None = None) -> None:
        self.pad_id = pad_id
        self.width = width  # every batch this wide (a compiled step: one shape); None: its longest row
        self.tokens_seen = 0

    def __call__(self, batch: Sequence[Example | dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [(b.input_ids, b.labels) if isinstance(b, Example) else (b["input_ids"], b["labels"]) for b in batch]
        width = max(self.width or 0, *(len(ids) for ids, _ in rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, lab) in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[r, :len(lab)] = torch.tensor(lab, dtype=torch.long)
            attention[r, :len(ids)] = 1
        self.tokens_seen += int(attention.sum())
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


class ExampleDataset:
    """A map-style dataset of dicts (the length-grouped sampler measures their ``input_ids``)."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        return {"input_ids": ex.input_ids, "labels": ex.labels}
