"""The one interface every model backend implements, and the values it exchanges."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "loop", "error"]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    batch_size: int = 8
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


@runtime_checkable
class ModelBackend(Protocol):
    """Generate raw text for prompts. Backends never see the database or the gold."""

    spec: str

    @property
    def fingerprint(self) -> str:
        """Stable identity of weights + adapter + options, for the generation cache."""
        ...

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        ...

    def close(self) -> None:
        ...


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
