"""The openai backend against a local HTTP server on 127.0.0.1 that speaks the chat-completions protocol."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.errors import ModelBackendError
from harness.models.base import BackendOptions, GenerationConfig, Prompt
from harness.models.openai_api import load_openai_backend, price_for

FAST = {"retries": "3", "backoff": "0.001", "max_backoff": "0.01", "timeout": "5", "concurrency": "2"}
CFG = GenerationConfig(max_new_tokens=50)


def completion(text: str, reason: str = "stop", tin: int = 1000, tout: int = 500) -> tuple[int, dict]:
    return 200, {"id": "x", "object": "chat.completion",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": reason}],
                 "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}}


class FakeAPI:
    """Serves scripted (status, body) responses in order; the last one repeats. Records requests."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict]] = [completion("SELECT 1;")]
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with api.lock:
                    api.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                         "body": body})
                    status, payload = api.responses.pop(0) if len(api.responses) > 1 else api.responses[0]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture()
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def backend(api: FakeAPI, model: str = "qwen-plus", **kw: object):
    return load_openai_backend(model, BackendOptions(api_base=api.url, api_key="sk-test", extra=dict(FAST),
                                                     **kw))


def test_success_records_tokens_and_cost(api):
    api.responses = [completion("SELECT count(*) FROM poi;", tin=1000, tout=500)]
    gens = backend(api).generate([Prompt("q1", "有多少个POI?")], CFG)
    (g,) = gens
    assert (g.text, g.finish_reason, g.tokens_in, g.tokens_out, g.error) == \
        ("SELECT count(*) FROM poi;", "stop", 1000, 500, None)
    assert g.cost_cny == pytest.approx(1000 / 1000 * 0.0008 + 500 / 1000 * 0.002)
    req = api.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "qwen-plus" and req["body"]["temperature"] == 0.0
    assert req["body"]["max_tokens"] == 50
    assert req["body"]["messages"] == [{"role": "user", "content": "有多少个POI?"}]


def test_chat_prompts_send_their_messages_and_prices_come_from_options(api):
    b = backend(api, model="my-vllm-model", price_in_cny_per_1k=1.0, price_out_cny_per_1k=2.0)
    p = Prompt("q1", "user text", messages=(("system", "sys"), ("user", "user text")))
    (g,) = b.generate([p], CFG)
    assert api.requests[0]["body"]["messages"] == [{"role": "system", "content": "sys"},
                                                   {"role": "user", "content": "user text"}]
    assert g.cost_cny == pytest.approx(1.0 + 1.0)


def test_length_finish_reason(api):
    api.responses = [completion("SELECT a, a, a", reason="length")]
    (g,) = backend(api).generate([Prompt("q", "x")], CFG)
    assert g.finish_reason == "length"


def test_rate_limit_then_success(api):
    api.responses = [(429, {"error": {"message": "rate limited"}}), (503, {"error": "busy"}), completion("SELECT 2;")]
    (g,) = backend(api).generate([Prompt("q", "x")], CFG)
    assert (g.text, g.error) == ("SELECT 2;", None)
    assert len(api.requests) == 3


def test_persistent_server_error_is_a_per_item_error(api):
    api.responses = [(500, {"error": {"message": "internal"}})]
    gens = backend(api).generate([Prompt("a", "x"), Prompt("b", "y")], CFG)
    assert [g.finish_reason for g in gens] == ["error", "error"]
    assert all(g.text == "" and "HTTP 500" in g.error and "after 4 attempts" in g.error for g in gens)
    assert len(api.requests) == 8  # 1 + 3 retries each


def test_auth_error_is_not_retried_and_names_the_key(api):
    api.responses = [(401, {"error": {"message": "invalid api key"}})]
    (g,) = backend(api).generate([Prompt("a", "x")], CFG)
    assert "HTTP 401" in g.error and "OPENAI_API_KEY" in g.error
    assert len(api.requests) == 1


def test_unreachable_endpoint_names_url_and_env(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    b = load_openai_backend("qwen-turbo", BackendOptions(extra=dict(FAST)))
    gens = b.generate([Prompt(str(i), "x") for i in range(4)], CFG)
    assert all(g.finish_reason == "error" for g in gens)
    assert f"cannot reach http://127.0.0.1:{port}/v1/chat/completions" in gens[0].error
    assert "OPENAI_BASE_URL" in gens[0].error


def test_env_configuration(monkeypatch, api):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TXT2SQL_API_BASE", api.url)
    monkeypatch.setenv("TXT2SQL_API_KEY", "sk-env")
    b = load_openai_backend("qwen-max", BackendOptions(extra=dict(FAST)))
    b.generate([Prompt("a", "x")], CFG)
    assert api.requests[0]["auth"] == "Bearer sk-env"


def test_unknown_model_has_no_price_and_says_so(api):
    b = backend(api, model="llama3")
    (g,) = b.generate([Prompt("a", "x")], CFG)
    assert g.cost_cny is None
    assert any("no price known" in w for w in b.warnings)


def test_price_lookup():
    assert price_for("qwen-plus-latest", BackendOptions()) == price_for("qwen-plus", BackendOptions())
    assert price_for("gpt-x", BackendOptions()) is None


def test_bad_base_url():
    with pytest.raises(ModelBackendError, match="must start with http"):
        load_openai_backend("m", BackendOptions(api_base="localhost:8000/v1"))


def test_concurrent_items_keep_their_order(api):
    api.responses = [completion("SELECT 1;")]
    gens = backend(api).generate([Prompt(str(i), f"q{i}") for i in range(6)], CFG)
    assert [g.id for g in gens] == [str(i) for i in range(6)]
    assert len(api.requests) == 6
