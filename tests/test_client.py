"""The endpoint client: batches, the response cache, retries, errors and keys.

Two kinds of server, both real: the local llama.cpp server of tests/llm/server.sh (``llm`` tests, skipped with
the reason when it is down), and :class:`ScriptedAPI`, a small ``http.server`` on 127.0.0.1 that speaks the
chat-completions API and answers errors, or stops, when a test tells it to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from test_llm_server import MODEL, llm_server  # noqa: F401  (llm_server: the fixture that skips when it is down)

from agent_safety.config.schema import EndpointConfig
from agent_safety.evaluate.generative.client import ChatRequest, Endpoint, EndpointError

CLOSED_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def endpoint(url: str, cache: Path, role: str = "judge", backoff_s: float = 0.02, **cfg: Any) -> Endpoint:
    """An Endpoint from the real config dataclass (as Hydra would pass it), retrying quickly."""
    fields = {"model": "tiny", "max_retries": 2, "timeout_s": 5.0, **cfg}
    conf = OmegaConf.structured(dataclasses.replace(EndpointConfig(), base_url=url, **fields))
    return Endpoint(conf, cache, role, backoff_s=backoff_s)


def ask(*questions: str, **kwargs: Any) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": q}], **kwargs) for q in questions]


def cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "responses").glob("*/*.json"))


class ScriptedAPI:
    """A chat-completions server in a thread. It answers ``fail`` (status codes, one per request) first, then
    "<name>: <question>"; after ``stop_after`` answers it shuts down, dropping the request that found it
    stopping, as a server killed mid-evaluation would. Counts requests, answers and requests in flight."""

    def __init__(self, name: str = "A", fail: tuple[int, ...] = (), stop_after: int | None = None,
                 delay_s: float = 0.0) -> None:
        self.name, self.fail, self.stop_after, self.delay_s = name, list(fail), stop_after, delay_s
        self.posts = self.answered = self.in_flight = self.max_in_flight = 0
        self.auth: list[str] = []
        self.stopped = False
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "t"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with api.lock:
                    api.posts += 1
                    api.auth.append(self.headers.get("Authorization", ""))
                    status = api.fail.pop(0) if api.fail else 200
                    if not api.stopped and api.stop_after is not None and api.answered >= api.stop_after:
                        api.stopped = True
                        threading.Thread(target=api.close, daemon=True).start()
                    if api.stopped:
                        self.close_connection = True  # no answer at all
                        return
                    api.in_flight += 1
                    api.max_in_flight = max(api.max_in_flight, api.in_flight)
                time.sleep(api.delay_s)
                with api.lock:
                    api.in_flight -= 1
                    if status == 200:
                        api.answered += 1
                if status != 200:
                    message = f"scripted {status}; you sent {self.headers.get('Authorization')}"
                    self._json(status, {"error": {"message": message, "type": "scripted"}},
                               {"Retry-After": "0"} if status == 429 else None)
                    return
                question = body["messages"][-1]["content"]
                text = f"{api.name}: {question}"
                usage = {"prompt_tokens": len(question.split()), "completion_tokens": len(text.split())}
                self._json(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {**usage, "total_tokens": sum(usage.values())},
                })

        return Handler


@pytest.fixture
def scripted():
    """Start ScriptedAPI servers; all are closed at the end."""
    servers: list[ScriptedAPI] = []

    def start(**kwargs: Any) -> ScriptedAPI:
        servers.append(ScriptedAPI(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        if not server.stopped:
            server.close()


# ---------------------------------------------------------------------- against the llama.cpp server


@pytest.mark.llm
def test_batch_has_token_counts_and_a_rerun_sends_nothing(llm_server: str, tmp_path: Path) -> None:  # noqa: F811
    requests = ask(*(f"Name one thing that is {c}." for c in ("red", "blue", "green", "cold", "loud", "soft")),
                   max_tokens=16)
    first = endpoint(llm_server, tmp_path, model=MODEL, max_concurrency=3)
    results = first.complete(requests, desc="six")
    assert [r.cached for r in results] == [False] * 6
    assert all(r.text.strip() and r.prompt_tokens > 0 and 0 < r.completion_tokens <= 16 for r in results)
    assert all(r.finish_reason in ("stop", "length") for r in results)
    usage = first.usage
    assert (usage.requests_sent, usage.cached) == (6, 0)
    assert usage.completion_tokens == sum(r.completion_tokens for r in results)
    assert usage.prompt_tokens == sum(r.prompt_tokens for r in results)
    assert len(cache_files(tmp_path)) == 6

    # the same Endpoint again (a second event loop), and a relaunch whose server is gone: all from the cache
    again = first.complete(requests)
    rerun = endpoint(CLOSED_URL, tmp_path, model=MODEL)
    cached = rerun.complete(requests)
    for batch in (again, cached):
        assert [r.text for r in batch] == [r.text for r in results]
        assert [r.completion_tokens for r in batch] == [r.completion_tokens for r in results]
        assert all(r.cached for r in batch)
    assert (first.usage.requests_sent, first.usage.cached) == (6, 6)
    assert (rerun.usage.requests_sent, rerun.usage.cached, rerun.usage.completion_tokens) == (0, 6, 0)
    assert rerun.usage.cached_completion_tokens == usage.completion_tokens


@pytest.mark.llm
def test_replicates_are_separate_entries_and_reproducible(llm_server: str, tmp_path: Path) -> None:  # noqa: F811
    (question,) = ask("Write a short poem about the sea.", temperature=1.0, max_tokens=16)
    replicates = [dataclasses.replace(question, replicate=i) for i in range(2)]
    ep = endpoint(llm_server, tmp_path / "a", model=MODEL)
    results = ep.complete(replicates)
    assert ep.usage.requests_sent == 2 and len(cache_files(tmp_path / "a")) == 2
    assert results[0].text != results[1].text  # seeds differ by replicate: two samples, not one twice
    fresh = endpoint(llm_server, tmp_path / "b", model=MODEL)
    assert [r.text for r in fresh.complete(replicates)] == [r.text for r in results]  # same seeds, same samples
    assert fresh.usage.requests_sent == 2


@pytest.mark.llm
def test_check_names_a_model_the_server_does_not_serve(llm_server: str, tmp_path: Path) -> None:  # noqa: F811
    # llama.cpp answers whatever model a request names, so the check is the listing
    endpoint(llm_server, tmp_path, model=MODEL).check()
    with pytest.raises(EndpointError) as e:
        endpoint(llm_server, tmp_path, model="no-such-model").check()
    assert "no-such-model" in str(e.value) and MODEL in str(e.value) and llm_server in str(e.value)


# ---------------------------------------------------------------------- no LLM needed


def test_missing_key_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_SAFETY_TEST_KEY", raising=False)
    ep = endpoint(CLOSED_URL, tmp_path, api_key_env="AGENT_SAFETY_TEST_KEY")
    for call in (ep.check, lambda: ep.complete(ask("hello"))):
        with pytest.raises(EndpointError, match="AGENT_SAFETY_TEST_KEY") as e:
            call()
        assert CLOSED_URL in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("AGENT_SAFETY_TEST_KEY", "  ")
    with pytest.raises(EndpointError, match="AGENT_SAFETY_TEST_KEY .*not set or empty"):
        ep.check()


def test_unreachable_endpoint_fails_fast_after_its_retries(tmp_path: Path) -> None:
    ep = endpoint(CLOSED_URL, tmp_path, role="emulator", max_retries=2, timeout_s=2.0)
    start = time.perf_counter()
    with pytest.raises(EndpointError) as e:
        ep.complete(ask("one", "two"))
    assert time.perf_counter() - start < 5
    message = str(e.value)
    assert message.startswith(f"endpoint {CLOSED_URL} (emulator) unreachable after 3 tries: ") and "\n" not in message
    assert ep.usage.requests_sent == 0 and ep.usage.failed == 2 and ep.usage.retries >= 2
    assert cache_files(tmp_path) == []
    with pytest.raises(EndpointError, match=f"endpoint {CLOSED_URL} \\(emulator\\) unreachable"):
        ep.check()


def test_429_and_503_are_retried(scripted, tmp_path: Path) -> None:
    api = scripted(fail=(429, 503))
    ep = endpoint(api.url, tmp_path)
    (result,) = ep.complete(ask("are you there?"))
    assert result.text == "A: are you there?" and not result.cached
    assert api.posts == 3
    assert (ep.usage.requests_sent, ep.usage.retries, ep.usage.failed) == (1, 2, 0)
    assert (result.prompt_tokens, result.completion_tokens) == (3, 4)


def test_retries_give_up_after_max_retries(scripted, tmp_path: Path) -> None:
    api = scripted(fail=(500, 502, 503, 504))
    ep = endpoint(api.url, tmp_path, max_retries=3)
    with pytest.raises(EndpointError, match=r"unreachable after 4 tries: HTTP 504: scripted 504"):
        ep.complete(ask("hello"))
    assert api.posts == 4


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_fail_at_once(scripted, tmp_path: Path, status: int) -> None:
    api = scripted(fail=(status,))
    ep = endpoint(api.url, tmp_path, role="emulator", model="tiny")
    with pytest.raises(EndpointError) as e:
        ep.complete(ask("hello"))
    message = str(e.value)
    assert message.startswith(f"endpoint {api.url} (emulator) rejected the request for model 'tiny': "
                              f"HTTP {status}")
    assert "\n" not in message
    assert api.posts == 1 and cache_files(tmp_path) == []


def test_a_model_the_server_does_not_serve_fails_before_any_request(scripted, tmp_path: Path) -> None:
    api = scripted()
    ep = endpoint(api.url, tmp_path, role="judge", model="my-model")
    with pytest.raises(EndpointError, match=r"\(judge\) does not serve model 'my-model'; it serves: tiny$"):
        ep.complete(ask("hello"))
    assert api.posts == 0 and cache_files(tmp_path) == []


def test_key_is_sent_but_never_written(scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-secret-4242"
    monkeypatch.setenv("AGENT_SAFETY_TEST_KEY", secret)
    echo = scripted(fail=(401,))  # its error message repeats the Authorization header it got
    with pytest.raises(EndpointError) as e:
        endpoint(echo.url, tmp_path, api_key_env="AGENT_SAFETY_TEST_KEY").complete(ask("hello"))
    assert echo.auth == [f"Bearer {secret}"]
    assert "HTTP 401" in str(e.value) and "***" in str(e.value) and secret not in str(e.value)

    api = scripted()
    ep = endpoint(api.url, tmp_path, api_key_env="AGENT_SAFETY_TEST_KEY")
    ep.complete(ask("hello"))
    ep.check()
    assert api.auth == [f"Bearer {secret}"]
    assert all(secret not in p.read_text() for p in cache_files(tmp_path)) and cache_files(tmp_path)
    assert secret.encode() not in pickle.dumps(ep) and secret not in repr(ep)


def test_no_key_variable_sends_a_placeholder(scripted, tmp_path: Path) -> None:
    api = scripted()
    endpoint(api.url, tmp_path).complete(ask("hello"))
    assert api.auth == ["Bearer sk-no-key-needed"]


def test_server_stopping_mid_evaluation_resumes_from_the_cache(scripted, tmp_path: Path) -> None:
    questions = [f"question {i}" for i in range(6)]
    first = scripted(name="A", stop_after=3)
    ep = endpoint(first.url, tmp_path, role="judge", max_concurrency=1, max_retries=2)
    with pytest.raises(EndpointError) as e:
        ep.complete(ask(*questions))
    message = str(e.value)
    assert message.startswith(f"endpoint {first.url} (judge) unreachable after 3 tries: ") and "\n" not in message
    assert first.answered == 3 and len(cache_files(tmp_path)) == 3
    assert (ep.usage.requests_sent, ep.usage.failed) == (3, 3)

    second = scripted(name="B")  # the relaunch: a new server (elsewhere), a new Endpoint, the same cache
    relaunch = endpoint(second.url, tmp_path, role="judge", max_concurrency=1)
    results = relaunch.complete(ask(*questions))
    assert [r.text for r in results] == [f"{'A' if i < 3 else 'B'}: {q}" for i, q in enumerate(questions)]
    assert [r.cached for r in results] == [True] * 3 + [False] * 3
    assert (relaunch.usage.requests_sent, relaunch.usage.cached, second.posts) == (3, 3, 3)


def test_concurrency_is_bounded(scripted, tmp_path: Path) -> None:
    api = scripted(delay_s=0.1)
    ep = endpoint(api.url, tmp_path, max_concurrency=3)
    results = ep.complete(ask(*(f"q{i}" for i in range(9))))
    assert [r.text for r in results] == [f"A: q{i}" for i in range(9)]
    assert api.max_in_flight == 3


def test_identical_requests_in_a_batch_are_sent_once(scripted, tmp_path: Path) -> None:
    api = scripted()
    ep = endpoint(api.url, tmp_path)
    results = ep.complete(ask("same", "same", "other"))
    assert [r.text for r in results] == ["A: same", "A: same", "A: other"]
    assert [r.cached for r in results] == [False, True, False]
    assert (api.posts, ep.usage.requests_sent, ep.usage.cached) == (2, 2, 1)


def test_cache_key_covers_sampling_and_a_damaged_file_is_a_miss(scripted, tmp_path: Path) -> None:
    api = scripted()
    ep = endpoint(api.url, tmp_path)
    (base,) = ask("hello")
    variants = [base, dataclasses.replace(base, temperature=0.5), dataclasses.replace(base, max_tokens=7),
                dataclasses.replace(base, stop=["\nObservation:"]), dataclasses.replace(base, seed=9),
                dataclasses.replace(base, replicate=1)]
    assert len({ep.cache_key(r) for r in variants}) == len(variants)
    assert ep.cache_key(dataclasses.replace(base, stop="x")) == ep.cache_key(dataclasses.replace(base, stop=["x"]))
    assert ep.cache_key(base) != endpoint(api.url, tmp_path, model="other").cache_key(base)
    assert ep.cache_key(base) == endpoint(CLOSED_URL, tmp_path).cache_key(base)  # the address is not identity

    ep.complete([base])
    (path,) = cache_files(tmp_path)
    assert path == tmp_path / "responses" / path.stem[:2] / f"{ep.cache_key(base)}.json"
    path.write_text('{"text": "trunc')
    (result,) = ep.complete([base])
    assert not result.cached and api.posts == 2 and json.loads(path.read_text())["text"] == "A: hello"


def test_complete_works_from_a_thread_and_inside_a_running_loop(scripted, tmp_path: Path) -> None:
    api = scripted()
    ep = endpoint(api.url, tmp_path)
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(ep.complete(ask("from a thread"))))
    thread.start()
    thread.join(30)
    assert out and out[0][0].text == "A: from a thread"

    async def notebook_cell() -> list:
        return ep.complete(ask("inside a loop"))

    assert asyncio.run(notebook_cell())[0].text == "A: inside a loop"
    assert ep.usage.requests_sent == 2


def test_bad_endpoint_config_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match=r"the agent endpoint has no base_url"):
        Endpoint(EndpointConfig(model="m"), tmp_path, "agent")
    with pytest.raises(EndpointError, match=rf"endpoint {CLOSED_URL} \(judge\): no model name configured"):
        Endpoint(EndpointConfig(base_url=CLOSED_URL), tmp_path, "judge")
    override = Endpoint(EndpointConfig(base_url=CLOSED_URL, model="m"), tmp_path, "agent", model="stage-2")
    assert override.model == "stage-2"


def test_one_failure_of_many_requests_prints_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ep = endpoint(CLOSED_URL, tmp_path, role="judge", max_retries=2, timeout_s=2.0)
    with caplog.at_level("WARNING"), pytest.raises(EndpointError, match="unreachable after 3 tries"):
        ep.complete(ask("one", "two", "three", "four"))
    assert ep.usage.retries >= 2
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and lines[0].startswith(f"endpoint {CLOSED_URL} (judge): ") and "retrying" in lines[0]


def test_preflight_asks_a_dead_server_again_then_names_it_in_one_line(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    ep = endpoint(CLOSED_URL, tmp_path, role="emulator", max_retries=2, timeout_s=2.0)
    with caplog.at_level("WARNING"), pytest.raises(EndpointError) as e:
        ep.preflight()
    assert str(e.value).startswith(f"endpoint {CLOSED_URL} (emulator) unreachable after 3 tries: ")
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_preflight_names_a_model_the_server_does_not_serve(scripted, tmp_path: Path) -> None:
    api = scripted()
    endpoint(api.url, tmp_path, model="tiny").preflight()
    endpoint(api.url, tmp_path, model="a-stage-path").preflight(model=False)  # the server alone
    with pytest.raises(EndpointError, match=r"does not serve model 'other'; it serves: tiny$"):
        endpoint(api.url, tmp_path, model="other").preflight()
    assert api.posts == 0
