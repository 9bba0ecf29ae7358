"""The ``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint (DashScope's
compatible mode, vLLM, Ollama, OpenAI), through the standard library only.

Greedy (temperature 0). Rate limits (429), server errors (5xx) and connection failures are retried with
exponential backoff; after the last retry the item gets ``Generation(error=...)``, never an empty
answer that would be scored as a wrong one. Token usage is recorded and priced in CNY.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import ModelBackendError
from harness.models.base import Generation, ModelBackend

if TYPE_CHECKING:  # used in annotations only
    from harness.models.base import BackendOptions, FinishReason, GenerationConfig, ProgressCallback, Prompt

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# CNY per 1,000 tokens (prompt, completion). ASSUMPTIONS taken from DashScope's public list prices at the
# time of writing; prices change and differ by region and tier. Configure yours with
# --price-in/--price-out (BackendOptions.price_in_cny_per_1k / price_out_cny_per_1k).
DEFAULT_PRICES_CNY_PER_1K: dict[str, tuple[float, float]] = {
    "qwen-turbo": (0.0003, 0.0006),
    "qwen-plus": (0.0008, 0.002),
    "qwen-max": (0.0024, 0.0096),
}
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "eos": "stop",
                                    "tool_calls": "stop", "function_call": "stop"}
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # attempts after the first
    backoff_s: float = 1.0  # first wait; doubles each retry
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        return min(self.backoff_s * (2 ** attempt), self.max_backoff_s)


def price_for(model: str, options: BackendOptions) -> tuple[float, float] | None:
    """(prompt, completion) CNY per 1k tokens: the options' prices, else the default table, else None."""
    if options.price_in_cny_per_1k is not None or options.price_out_cny_per_1k is not None:
        return (options.price_in_cny_per_1k or 0.0, options.price_out_cny_per_1k or 0.0)
    if model in DEFAULT_PRICES_CNY_PER_1K:
        return DEFAULT_PRICES_CNY_PER_1K[model]
    for name in sorted(DEFAULT_PRICES_CNY_PER_1K, key=len, reverse=True):  # qwen-plus-latest -> qwen-plus
        if model.startswith(name + "-"):
            return DEFAULT_PRICES_CNY_PER_1K[name]
    return None


class OpenAIBackend(ModelBackend):
    def __init__(self, model: str, *, base_url: str, api_key: str | None, retry: RetryPolicy,
                 concurrency: int = 4, prices: tuple[float, float] | None = None, spec: str | None = None):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.api_key = api_key
        self.retry = retry
        self.concurrency = max(1, concurrency)
        self.prices = prices
        self.spec = spec or f"openai:{model}"
        self.template = None
        self.warnings: list[str] = []
        self._down: str | None = None  # set once the endpoint proved unreachable: fail the rest fast
        self._lock = threading.Lock()
        if prices is None:
            msg = (f"no price known for model '{model}': cost_cny is not recorded. Pass --price-in/--price-out "
                   "(CNY per 1k tokens)")
            log.warning(msg)
            self.warnings.append(msg)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(["openai", self.base_url, self.model]).encode()).hexdigest()

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        if prompt.messages:
            return [{"role": r, "content": c} for r, c in prompt.messages]
        return [{"role": "user", "content": prompt.text}]

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.retry.timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _one(self, prompt: Prompt, config: GenerationConfig) -> Generation:
        body = json.dumps({"model": self.model, "messages": self._messages(prompt),
                           "temperature": config.temperature, "max_tokens": config.max_new_tokens,
                           "seed": config.seed, "n": 1}, ensure_ascii=False).encode("utf-8")
        t0 = time.perf_counter()
        last = ""
        for attempt in range(self.retry.retries + 1):
            if self._down:
                return self._error(prompt, self._down, t0)
            retry_after = None
            try:
                data = self._post(body)
                return self._parse(prompt, data, time.perf_counter() - t0)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300] if exc.fp else ""
                last = f"HTTP {exc.code} from {self.url}: {detail or exc.reason}"
                if exc.code not in RETRYABLE_STATUS:
                    hint = {401: "; check OPENAI_API_KEY / TXT2SQL_API_KEY",
                            403: "; check OPENAI_API_KEY / TXT2SQL_API_KEY",
                            404: f"; check the model name '{self.model}' and OPENAI_BASE_URL (it should end "
                                 "in /v1)"}.get(exc.code, "")
                    return self._error(prompt, last + hint, t0)
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = (f"cannot reach {self.url} ({reason}); check OPENAI_BASE_URL / TXT2SQL_API_BASE "
                        "and that the server is running")
                if attempt == self.retry.retries:
                    with self._lock:
                        self._down = last
            except ValueError as exc:  # JSON decoding, or a response without choices
                last = f"bad response from {self.url}: {exc}"
            if attempt < self.retry.retries:
                time.sleep(self.retry.delay(attempt, retry_after))
        return self._error(prompt, f"{last} (after {self.retry.retries + 1} attempts)", t0)

    def _error(self, prompt: Prompt, message: str, t0: float) -> Generation:
        return Generation(id=prompt.id, text="", finish_reason="error", error=message,
                          seconds=time.perf_counter() - t0)

    def _parse(self, prompt: Prompt, data: dict, seconds: float) -> Generation:
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ValueError(f"no choices[0].message.content in {json.dumps(data)[:200]}") from exc
        reason = choice.get("finish_reason") or "stop"
        usage = data.get("usage") or {}
        tin, tout = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cost = None
        if self.prices is not None and usage:
            cost = (tin * self.prices[0] + tout * self.prices[1]) / 1000.0
        if reason not in _FINISH:
            return Generation(id=prompt.id, text=text, finish_reason="error", tokens_in=tin, tokens_out=tout,
                              seconds=seconds, cost_cny=cost, error=f"finish_reason '{reason}' from {self.url}")
        return Generation(id=prompt.id, text=text, finish_reason=_FINISH[reason], tokens_in=tin,
                          tokens_out=tout, seconds=seconds, cost_cny=cost)

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig,
                 progress: ProgressCallback | None = None) -> list[Generation]:
        def run(p: Prompt) -> Generation:
            g = self._one(p, config)
            if progress is not None:
                progress(1)
            return g

        if self.concurrency == 1 or len(prompts) <= 1:
            return [run(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(run, prompts))

    def close(self) -> None:
        pass


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def load_openai_backend(model: str, options: BackendOptions, *, spec: str | None = None) -> OpenAIBackend:
    """``openai:MODEL``; base URL and key from options, else OPENAI_BASE_URL/KEY, else TXT2SQL_API_*."""
    if not model:
        raise ModelBackendError("openai: needs a model name, e.g. openai:qwen-plus")
    base = options.api_base or _env("OPENAI_BASE_URL", "TXT2SQL_API_BASE") or DEFAULT_BASE_URL
    if not base.startswith(("http://", "https://")):
        raise ModelBackendError(f"API base URL '{base}' must start with http:// or https:// "
                                "(check --api-base / OPENAI_BASE_URL)")
    key = options.api_key or _env("OPENAI_API_KEY", "TXT2SQL_API_KEY")
    extra = options.extra

    def num(name: str, default: float) -> float:
        try:
            return float(extra.get(name, default))
        except ValueError as exc:
            raise ModelBackendError(f"option {name}={extra[name]!r}: expected a number") from exc

    retry = RetryPolicy(retries=int(num("retries", 4)), backoff_s=num("backoff", 1.0),
                        max_backoff_s=num("max_backoff", 30.0), timeout_s=num("timeout", 60.0))
    return OpenAIBackend(model, base_url=base, api_key=key, retry=retry,
                         concurrency=int(num("concurrency", 4)), prices=price_for(model, options), spec=spec)
