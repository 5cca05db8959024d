"""The local OpenAI-compatible LLM server of tests/llm/server.sh, through the official ``openai`` client.

The ``llm`` tests need the server up (``bash tests/llm/server.sh start``) and skip with the reason otherwise.
It serves SmolLM2-135M-Instruct on CPU as ``smollm2-135m`` at ``$AGENT_SAFETY_TEST_LLM_URL``
(default ``http://127.0.0.1:18080/v1``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.llm

URL = os.environ.get("AGENT_SAFETY_TEST_LLM_URL", "http://127.0.0.1:18080/v1").rstrip("/")
MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "Name the three primary colors."}]
PROMPTS = ("Write a haiku about rain.", "Write a haiku about snow.", "Give me a tip for learning Python.")


@pytest.fixture(scope="module")
def llm_server() -> str:
    """The server's base URL (``.../v1``), or a visible skip when it does not answer."""
    try:
        with urllib.request.urlopen(f"{URL}/models", timeout=2) as response:
            models = [m.get("id") for m in json.load(response).get("data", [])]
    except (OSError, ValueError) as e:  # URLError, connection refused, timeout, not JSON
        pytest.skip(f"local LLM server not running: bash tests/llm/server.sh start ({URL}/models: {e})")
    if MODEL not in models:
        pytest.fail(f"the server at {URL} serves {models}, not {MODEL!r}")
    return URL


@pytest.fixture(scope="module")
def client(llm_server: str):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=llm_server, api_key="sk-local-no-key", timeout=600, max_retries=0)


def _chat(client, messages=MESSAGES, max_tokens=16, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, **kwargs)


def _twice(client, **kwargs) -> list[tuple[str, str, str]]:
    """(prompt, text, text) for each prompt asked twice in a row after a different request. The server reuses
    its KV cache: the first answer comes after a partial prefix match, the second after a full one. A response
    cache relies on the answer not depending on what the server served before."""
    texts = []
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        _chat(client, [{"role": "user", "content": f"Something else: {prompt[::-1]}"}], max_tokens=4, **kwargs)
        first, second = (_chat(client, messages, max_tokens=48, **kwargs).choices[0].message.content
                         for _ in range(2))
        texts.append((prompt, first, second))
    return texts


def test_chat_completion_returns_text_and_usage(client) -> None:
    response = _chat(client, temperature=0)
    (choice,) = response.choices
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.model == MODEL


def test_temperature_zero_is_deterministic(client) -> None:
    first, second = (_chat(client, temperature=0) for _ in range(2))
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage
    for prompt, a, b in _twice(client, temperature=0):
        assert a and a == b, prompt


def test_seed_is_accepted_and_fixes_sampling(client) -> None:
    for prompt, a, b in _twice(client, temperature=1.0, seed=1234):
        assert a and a == b, prompt
