"""One client for every OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API), with a response cache.

The emulator, the judges and an ``openai`` agent all talk to their servers through :class:`Endpoint`:
``complete()`` takes a batch of :class:`ChatRequest`, sends the ones it has not answered before (the official
``openai`` package's ``AsyncOpenAI``, at most ``max_concurrency`` in flight) and returns one
:class:`ChatResult` per request, in order.

Why each piece is there:

- **Cache.** Every answer is written to ``cache_dir/responses/<key[:2]>/<key>.json`` as soon as it arrives,
  where the key hashes what decides the answer: the model name, the messages, temperature, max_tokens, stop,
  seed and the replicate index (not the server's address, which is not part of an evaluation's identity).
  A cached request is never sent, so an evaluation that died halfway resumes where it stopped and a rerun
  costs nothing. Files are renamed into place (:func:`~agent_safety.store.io.atomic_write`), so processes
  sharing a cache may race safely; a damaged file (a crash before the data reached the disk) counts as a miss.
- **Retries.** The SDK's own retries are off (``max_retries=0``) so the counts here are honest: 429, 5xx,
  timeouts and connection errors are retried ``max_retries`` times with exponential backoff and jitter
  (honouring ``Retry-After``), holding the request's concurrency slot so a struggling server is not hammered.
  Other 4xx fail at once. Either way the batch stops with one :class:`EndpointError` line naming the
  endpoint's URL, its role and the model; answers that arrived before it stay cached.
- **Keys.** ``api_key_env`` names the environment variable that holds the key; the key is read when a request
  must be sent, never stored on the object (which submitit pickles), never cached, logged or put in an error.
  Without ``api_key_env`` a placeholder is sent: local servers ignore it.
- **Usage.** :class:`Usage` counts, per ``Endpoint`` and process, what was sent and what came from the cache,
  so a record can say what an evaluation cost and that its rerun cost no requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent_safety.store.hashing import content_hash
from agent_safety.store.io import atomic_write

log = logging.getLogger(__name__)

#: Sent as the API key when the endpoint names no key variable: the SDK needs one, local servers ignore it.
PLACEHOLDER_KEY = "sk-no-key-needed"
#: Version of the cache files' layout; a file of another version is a miss.
CACHE_FORMAT = 1
#: Longest wait between two tries, whatever the backoff or the server's Retry-After says.
MAX_BACKOFF_S = 60.0
#: ``check()`` asks once, this long at most: it runs before an evaluation and should fail fast.
CHECK_TIMEOUT_S = 10.0
#: Status codes worth another try besides 5xx: request timeout and rate limit.
RETRY_STATUS = (408, 429)


class EndpointError(ConnectionError):
    """An endpoint failed: the message is one line naming the endpoint's URL and role (never the key). A
    ConnectionError, so the command line and the launcher report it as one line without importing this."""


@dataclass
class ChatRequest:
    """One chat completion to get. ``replicate`` tells otherwise identical requests apart (a judge asked three
    times at temperature > 0): each has its own cache entry. ``seed`` None means the endpoint's ``seed`` plus
    ``replicate``."""

    messages: list[dict[str, str]]
    temperature: float = 0.0
    max_tokens: int = 1024
    stop: list[str] | None = None
    replicate: int = 0
    seed: int | None = None


@dataclass
class ChatResult:
    """A completion: its text, its token counts (as the server reported them when it was generated), whether
    it came from the cache, and why generation ended (``stop``, ``length``; None if the server did not say)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    finish_reason: str | None = None


@dataclass
class Usage:
    """What an :class:`Endpoint` cost in this process.

    ``requests_sent`` counts requests answered by the server (each once, however often it was retried), and
    ``prompt_tokens``/``completion_tokens`` their tokens; ``cached`` counts answers taken from the cache (or
    from an identical request earlier in the same batch), whose tokens, as first generated, go to
    ``cached_prompt_tokens``/``cached_completion_tokens``. ``retries`` counts tries after a retryable error;
    ``failed`` requests given up on. A rerun from a full cache: ``requests_sent == 0``.
    """

    requests_sent: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    retries: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Endpoint:
    """An OpenAI-compatible chat endpoint in one role (``agent``, ``emulator``, ``judge``...).

    ``cfg`` has :class:`~agent_safety.config.schema.EndpointConfig`'s fields; ``model`` overrides
    ``cfg.model``. ``backoff_s`` is the first retry's wait (doubling each time, with jitter).
    One ``Endpoint`` serves one thread at a time (its :class:`Usage` is not locked).
    """

    def __init__(self, cfg: Any, cache_dir: Path, role: str, model: str | None = None, *,
                 backoff_s: float = 1.0) -> None:
        self.role = role
        self.url = str(cfg.base_url or "").rstrip("/")
        if not self.url:
            raise EndpointError(f"the {role} endpoint has no base_url (e.g. http://localhost:8000/v1)")
        self.model = str(model or cfg.model or "")
        if not self.model:
            raise EndpointError(f"{self._name}: no model name configured")
        self.api_key_env: str | None = cfg.api_key_env or None
        self.max_concurrency = int(cfg.max_concurrency)
        self.timeout_s = float(cfg.timeout_s)
        self.max_retries = int(cfg.max_retries)
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise EndpointError(f"{self._name}: max_concurrency must be >= 1, max_retries >= 0 and timeout_s > 0 "
                                f"(got {self.max_concurrency}, {self.max_retries}, {self.timeout_s})")
        self.seed: int | None = None if cfg.seed is None else int(cfg.seed)
        self.cache_dir = Path(cache_dir)
        self.backoff_s = float(backoff_s)
        self.usage = Usage()
        self._checked = False
        self._retry_noted = False

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, role={self.role!r}, model={self.model!r})"

    @property
    def _name(self) -> str:
        return f"endpoint {self.url} ({self.role})"

    # ------------------------------------------------------------------ public API

    def check(self) -> None:
        """Fail now, with a clear line, rather than after the agent's first batch: the key variable is set,
        the server answers (one try, at most :data:`CHECK_TIMEOUT_S`), and it serves the model if it lists
        its models (servers that do not list them are not checked)."""
        _run(self._check())

    def preflight(self, model: bool = True) -> None:
        """:meth:`check` before a run's first rollout or training step, patient as the sends are: a server
        that does not answer (still starting up) is asked again ``max_retries`` times with backoff, saying so
        in one line, then named in one line. ``model=False`` checks only that the server answers (the
        agent's served name may change with the stage)."""
        _run(self._preflight(model))

    async def _preflight(self, model: bool) -> None:
        tries = self.max_retries + 1
        for attempt in range(tries):
            try:
                if model:
                    await self._check()
                else:
                    await self._served_models(self._api_key())
                return
            except _Unreachable as e:
                if attempt + 1 == tries:
                    raise EndpointError(f"{self._name} unreachable after {tries} tries: {e.reason}") from e
                delay = self._backoff(attempt, e)
                if attempt == 0:
                    log.warning("%s: %s; asking again up to %d times before any work", self._name, e.reason,
                                tries - 1)
                await asyncio.sleep(delay)

    async def _check(self, strict: bool = True) -> None:
        """``strict=False`` (before a first send) lets an unreachable server through: the sends retry it with
        backoff, as a server still starting up needs, and name the endpoint if it stays down."""
        try:
            served = await self._served_models(self._api_key())
        except _Unreachable:
            if strict:
                raise
            return
        if served and self.model not in served:
            shown = ", ".join(served[:20]) + (f" (+{len(served) - 20} more)" if len(served) > 20 else "")
            raise EndpointError(f"{self._name} does not serve model {self.model!r}; it serves: {shown}")
        self._checked = True

    def complete(self, requests: list[ChatRequest], desc: str = "") -> list[ChatResult]:
        """One result per request, in order: cached answers as they are, the rest sent, ``max_concurrency``
        at a time. Synchronous (runs its own event loop; from inside a running loop, in a worker thread)."""
        requests = list(requests)
        if not requests:
            return []
        return _run(self._complete(requests, desc))

    def cache_key(self, request: ChatRequest) -> str:
        """sha256 of the canonical JSON of what decides the answer (not the server's address)."""
        payload = {
            "model": self.model,
            "messages": request.messages,
            "temperature": float(request.temperature),
            "max_tokens": int(request.max_tokens),
            "stop": _stops(request.stop),
            "seed": self._seed(request),
            "replicate": int(request.replicate),
        }
        return content_hash(payload, compact=True)

    def cache_path(self, key: str) -> Path:
        return self.cache_dir / "responses" / key[:2] / f"{key}.json"

    # ------------------------------------------------------------------ cache

    def _seed(self, request: ChatRequest) -> int | None:
        """The request's seed, else the endpoint's plus the replicate index: replicates sampled at temperature
        > 0 then differ from each other yet come out the same on every rerun (where the server honours seeds)."""
        if request.seed is not None:
            return int(request.seed)
        return None if self.seed is None else self.seed + int(request.replicate)

    def _load(self, key: str) -> ChatResult | None:
        path = self.cache_path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT:
                return None
            return ChatResult(text=data["text"], prompt_tokens=int(data["prompt_tokens"]),
                              completion_tokens=int(data["completion_tokens"]), cached=True,
                              finish_reason=data.get("finish_reason"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s: unreadable cache file %s (%s): asking again", self._name, path, e)
            return None

    def _store(self, key: str, request: ChatRequest, result: ChatResult) -> None:
        """The answer and what it answered (but not the messages, which the trajectory records hold)."""
        data = {
            "format": CACHE_FORMAT, "model": self.model, "temperature": float(request.temperature),
            "max_tokens": int(request.max_tokens), "stop": _stops(request.stop), "seed": self._seed(request),
            "replicate": int(request.replicate), "text": result.text, "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
        }
        # Not fsynced: a file lost or torn in a crash is only a miss (see _load), and a batch writes many.
        atomic_write(self.cache_path(key), json.dumps(data, ensure_ascii=False), durable=False)

    # ------------------------------------------------------------------ sending

    def _api_key(self) -> str:
        if not self.api_key_env:
            return PLACEHOLDER_KEY
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise EndpointError(f"{self._name}: environment variable {self.api_key_env} (api_key_env) "
                                "is not set or empty")
        return key

    def _client(self, key: str, timeout_s: float) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.url, api_key=key, timeout=timeout_s, max_retries=0)

    async def _complete(self, requests: list[ChatRequest], desc: str) -> list[ChatResult]:
        keys = [self.cache_key(r) for r in requests]
        results: list[ChatResult | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}  # key -> indexes of the requests it answers (identical ones sent once)
        for i, key in enumerate(keys):
            if key in todo:
                todo[key].append(i)
            elif (hit := self._load(key)) is not None:
                results[i] = hit
                self._count_cached(hit)
            else:
                todo[key] = [i]
        with _progress(len(requests), len(requests) - sum(map(len, todo.values())), desc or self.role) as bar:
            if todo:
                if not self._checked:  # before the first request this process sends; cached reruns need no server
                    await self._check(strict=False)
                await self._send_all(requests, todo, results, bar)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # cannot happen: every index is a hit, a duplicate or sent
            raise AssertionError(f"{self._name}: no result for requests {missing}")
        return results  # type: ignore[return-value]

    def _count_cached(self, result: ChatResult) -> None:
        self.usage.cached += 1
        self.usage.cached_prompt_tokens += result.prompt_tokens
        self.usage.cached_completion_tokens += result.completion_tokens

    async def _send_all(self, requests: list[ChatRequest], todo: dict[str, list[int]],
                        results: list[ChatResult | None], bar: Any) -> None:
        """Send one request per key; the first failure cancels the rest (their answers so far stay cached)."""
        client = self._client(self._api_key(), self.timeout_s)
        slots = asyncio.Semaphore(self.max_concurrency)
        self._retry_noted = False

        async def one(key: str, indexes: list[int]) -> None:
            request = requests[indexes[0]]
            async with slots:
                result = await self._send(client, request)
            self._store(key, request, result)
            self.usage.requests_sent += 1
            self.usage.prompt_tokens += result.prompt_tokens
            self.usage.completion_tokens += result.completion_tokens
            results[indexes[0]] = result
            for i in indexes[1:]:
                results[i] = ChatResult(result.text, result.prompt_tokens, result.completion_tokens, True,
                                        result.finish_reason)
                self._count_cached(result)
            bar.update(len(indexes))

        try:
            tasks = [asyncio.create_task(one(key, idx)) for key, idx in todo.items()]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            finished = [t for t in tasks if not t.cancelled()]
            errors = [e for t in finished if (e := t.exception()) is not None]
            if errors:
                self.usage.failed += len(tasks) - (len(finished) - len(errors))
                raise errors[0]
        finally:
            await client.close()

    async def _send(self, client: Any, request: ChatRequest) -> ChatResult:
        """One request, retried on 429/5xx/timeouts/connection errors; other errors end the batch."""
        import openai

        params: dict[str, Any] = {"model": self.model, "messages": request.messages,
                                  "temperature": float(request.temperature), "max_tokens": int(request.max_tokens)}
        if (stop := _stops(request.stop)) is not None:
            params["stop"] = stop
        if (seed := self._seed(request)) is not None:
            params["seed"] = seed
        tries = self.max_retries + 1
        for attempt in range(tries):
            try:
                response = await client.chat.completions.create(**params)
            except openai.APIStatusError as e:
                if not _retryable_status(e.status_code):
                    raise EndpointError(f"{self._name} rejected the request for model {self.model!r}: "
                                        f"{self._reason(e)}") from e
                error: Exception = e
            except openai.APIConnectionError as e:  # APITimeoutError too
                error = e
            else:
                return self._result(response)
            if attempt + 1 == tries:
                raise EndpointError(f"{self._name} unreachable after {tries} tries: {self._reason(error)}") from error
            delay = self._backoff(attempt, error)
            self.usage.retries += 1
            self._note_retry(self._reason(error), tries)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _note_retry(self, reason: str, tries: int) -> None:
        """One line per batch for a failure its requests retry, however many requests meet it (a server that
        is down would otherwise print one line per request and try); the rest go to the debug log."""
        if self._retry_noted:
            log.debug("%s: %s; retrying", self._name, reason)
            return
        self._retry_noted = True
        log.warning("%s: %s; retrying each request up to %d times with backoff (further retries not shown)",
                    self._name, reason, tries - 1)

    def _result(self, response: Any) -> ChatResult:
        if not getattr(response, "choices", None):
            raise EndpointError(f"{self._name} answered model {self.model!r} with no choices")
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return ChatResult(text=choice.message.content or "",
                          prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                          completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                          cached=False, finish_reason=choice.finish_reason)

    def _backoff(self, attempt: int, error: Exception) -> float:
        """Exponential backoff with jitter (50-100% of the step), or the server's Retry-After if it says."""
        delay = self.backoff_s * 2.0**attempt * random.uniform(0.5, 1.0)
        headers = getattr(getattr(error, "response", None), "headers", None) or {}
        try:
            delay = max(delay, float(headers.get("retry-after", 0)))
        except (TypeError, ValueError):  # an HTTP date: keep the backoff
            pass
        return min(delay, MAX_BACKOFF_S)

    def _reason(self, error: Exception) -> str:
        """The error on one line, without the key even if a server echoes it."""
        status = getattr(error, "status_code", None)
        text = str(getattr(error, "message", None) or error)
        if status is not None:  # the server's own message (the SDK's "Error code: N - <message>"), else its body
            text = re.sub(r"^Error code: \d+( - )?", "", text)
            body = getattr(error, "body", None)
            text = f"HTTP {status}: {text or (body if isinstance(body, str) else '') or 'no message'}"
        elif (cause := _root_cause(error)) and cause not in text:
            text = f"{text} ({cause})"
        if self.api_key_env and (key := os.environ.get(self.api_key_env, "").strip()):
            text = text.replace(key, "***")
        text = re.sub(r"\s+", " ", text).strip()
        return text if len(text) <= 300 else text[:297] + "..."

    async def _served_models(self, key: str) -> list[str]:
        """Model ids the server lists; [] if it lists none or has no ``/models``."""
        import openai

        client = self._client(key, min(self.timeout_s, CHECK_TIMEOUT_S))
        try:
            page = await client.models.list()
            return [m.id for m in page.data]
        except openai.NotFoundError:
            return []
        except openai.APIStatusError as e:
            what = f"refused the key from {self.api_key_env}" if e.status_code in (401, 403) else "failed"
            raise EndpointError(f"{self._name} {what} listing models: {self._reason(e)}") from e
        except openai.APIConnectionError as e:
            raise _Unreachable(self._name, self._reason(e)) from e
        finally:
            await client.close()


class _Unreachable(EndpointError):
    """The server did not answer at all (as opposed to answering no)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} unreachable: {reason}")
        self.reason = reason


def _stops(stop: list[str] | str | None) -> list[str] | None:
    """None or a list (a lone string becomes a list; [] means none), so equal requests hash equally."""
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    return stops or None


def _root_cause(error: BaseException) -> str:
    """The innermost explanation (``[Errno 111] Connect call failed``) under the SDK's generic message."""
    found, seen = "", 0
    inner = error.__cause__ or error.__context__
    while inner is not None and seen < 16:
        found = str(inner) or found
        inner, seen = inner.__cause__ or inner.__context__, seen + 1
    return found


def _retryable_status(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code: here if no loop runs in this thread (the usual
    case, also in worker threads), else in a worker thread (a notebook's running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # outside the except block, so errors do not carry "no running event loop" as context
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _progress(total: int, initial: int, desc: str) -> Any:
    """A tqdm bar that starts past the cached answers; off when ``TQDM_DISABLE`` is set."""
    from agent_safety.console import progress

    return progress(total, desc, initial=initial, unit="req")
