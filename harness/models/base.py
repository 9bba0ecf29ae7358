"""The one interface every model backend implements, and the values it exchanges."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # prompts import this module
    from harness.prompts.templates import PromptTemplate

FinishReason = Literal["stop", "length", "loop", "error"]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    batch_size: int = 0  # 0: auto (harness.models.engine.auto_batch_size: GPU memory; up to 32 on a CPU)
    temperature: float = 0.0  # 0 = greedy, deterministic
    seed: int = 0
    stop_at_statement_end: bool = True
    stop_on_loop: bool = True

    def key(self) -> str:
        return (f"max_new_tokens={self.max_new_tokens};temperature={self.temperature};seed={self.seed};"
                f"stop_stmt={self.stop_at_statement_end};stop_loop={self.stop_on_loop}")


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt for one question. ``text`` is what the model sees."""

    id: str
    text: str
    template: str = ""
    # Chat prompts: (role, content) pairs, system first; ``text`` is then the user message. Empty for
    # completion prompts. Backends that speak chat (hf with a chat template, openai) send these.
    messages: tuple[tuple[str, str], ...] = ()

    def identity(self) -> str:
        """Everything the model sees, as one string: the generation cache keys on it."""
        if not self.messages:
            return self.text
        return "chat:" + json.dumps([list(m) for m in self.messages], ensure_ascii=False)


@dataclass(frozen=True)
class Generation:
    """A model's raw output for one prompt, with what it cost."""

    id: str
    text: str
    finish_reason: FinishReason = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    error: str | None = None  # per-item backend failure (API error after retries, ...)
    cost_cny: float | None = None
    cached: bool = False


ProgressCallback = Callable[[int], None]  # called with the number of items just finished


@dataclass(frozen=True)
class ModelInfo:
    """What a reader of a run needs to know about its model (summary.json, console and HTML headers)."""

    name: str  # what people call it: SmolLM2-135M-Instruct, qwen-plus, predictions.jsonl
    backend: str  # embedded | hf | lora | openai | replay
    dtype: str | None = None  # the weights' dtype as loaded (local models)
    adapter: str | None = None  # lora: the adapter directory
    adapter_base: str | None = None  # lora: the base model it was applied to
    fingerprint: str = ""  # ModelBackend.fingerprint: equal fingerprints, same weights, adapter and options


class ModelBackend(ABC):
    """Generate raw text for prompts. Backends never see the database or the gold.

    Everything the pipeline uses is declared here, with a default where one makes sense: a backend
    subclasses this and overrides what it knows (a trained adapter its ``template``, a loader its
    ``warnings``, the replay backend ``cacheable = False``).
    """

    spec: str
    template: PromptTemplate | None = None  # the template the weights were trained with; None: no preference
    warnings: Sequence[str] = ()  # said once to the user before the results (e.g. a template mismatch)
    cacheable: bool = True  # False: outputs do not depend on the prompt alone (replay), never cached

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Stable identity of weights + adapter + options, for the generation cache."""

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        """One ``Generation`` per prompt, in the prompts' order."""

    def close(self) -> None:
        """Free what the backend holds (weights, connections); nothing by default."""
        return None

    def describe(self) -> ModelInfo:
        """The model as a run records it; by default what the spec string says (``openai:qwen-plus``)."""
        backend, _, arg = self.spec.partition(":")
        return ModelInfo(name=arg or backend, backend=backend, fingerprint=self.fingerprint)


@dataclass(frozen=True)
class BackendOptions:
    """Options from the CLI / pytest / tox, passed to whichever backend the spec names."""

    base_model: str | None = None
    dtype: str = "auto"
    device_map: str | None = None
    quantize: str | None = None  # "8bit" | "4bit"
    template: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    price_in_cny_per_1k: float | None = None
    price_out_cny_per_1k: float | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False)
