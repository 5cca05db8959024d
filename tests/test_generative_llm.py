"""The generative evaluation against a real OpenAI-compatible server (tests/llm/server.sh: llama.cpp serving
SmolLM2-135M-Instruct, which ignores formats, so the parse-failure paths are real)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import LLM_MODEL, ROOT, compose, llm_answers

from agent_safety.evaluate.generative.client import EndpointError

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def _endpoint(role: str, url: str, **extra: object) -> list[str]:
    keys = {"base_url": url, "model": LLM_MODEL, "max_tokens": 96, "timeout_s": 60, **extra}
    return [f"eval.{role}.endpoint.{k}={v}" for k, v in keys.items()]


def _tiny_base(cache_dir: Path) -> str:
    """The project's tiny model, built once per cache: a real checkpoint folder to score as stage 0."""
    from agent_safety.data.benchmark import load_data
    from agent_safety.train.models import resolve_base

    cfg = compose([f"paths.cache_dir={cache_dir}"])
    path, _ = resolve_base(cfg.model, load_data(cfg.data, cache_dir), cache_dir)
    return path


def test_an_llm_emulated_llm_judged_evaluation_completes_and_a_rerun_sends_nothing(llm_url: str, cache_dir: Path,
                                                                                 tmp_path: Path) -> None:
    from agent_safety.run.evaluate_cli import evaluate_model

    overrides = [f"paths.cache_dir={cache_dir}", f"paths.runs_dir={tmp_path}", "threads=2", "eval=generative",
                 "eval.max_cases=2", "eval.agent.token_limit=160", "eval.agent.max_tokens_per_step=64",
                 "eval/agent=openai", *_endpoint("agent", llm_url), "eval/emulator=llm",
                 *_endpoint("emulator", llm_url), "eval/judge=llm", *_endpoint("judge", llm_url),
                 "eval.judge.label=smollm2", "eval.judge.max_parse_retries=1"]
    model = _tiny_base(cache_dir)
    first = evaluate_model(model, overrides, tmp_path / "first")
    usage = first["usage"]
    assert usage["judge"]["requests_sent"] >= 4 and usage["agent"]["requests_sent"] >= 2
    assert usage["emulator"]["requests_sent"] == first["emulator_calls"] - usage["emulator"]["cached"] >= 0
    for metric in ("safety", "helpfulness"):
        assert 0 <= first["judge_parse_failures"][metric] <= 2 * 2  # counted per replicate, never invented
    assert first["unscored_cases"] + len(first["cases"]) == 2
    again = evaluate_model(model, overrides, tmp_path / "again")
    assert {role: again["usage"][role]["requests_sent"] for role in ("agent", "emulator", "judge")} == \
        {"agent": 0, "emulator": 0, "judge": 0}
    assert (again["safety"], again["helpfulness"], again["cases"]) == (first["safety"], first["helpfulness"],
                                                                       first["cases"])


def _server(action: str, port: int, folder: Path) -> None:
    env = {**os.environ, "LLM_TEST_PORT": str(port), "LLM_TEST_DIR": str(folder)}
    subprocess.run(["bash", str(ROOT / "tests" / "llm" / "server.sh"), action], env=env, check=True,
                   capture_output=True, timeout=600)


def test_a_server_stopped_mid_evaluation_is_one_line_and_the_relaunch_resumes_from_the_cache(
        llm_url: str, cache_dir: Path, tmp_path: Path) -> None:
    from agent_safety.run.evaluate_cli import evaluate_model

    port, folder = 18091, tmp_path / "server"
    url = f"http://127.0.0.1:{port}/v1"
    _server("start", port, folder)
    try:
        overrides = [f"paths.cache_dir={cache_dir}", f"paths.runs_dir={tmp_path}", "threads=2", "eval=generative",
                     "eval.max_cases=4", "eval.agent.token_limit=32", "eval.agent.max_tokens_per_step=32",
                     "eval/judge=llm", *_endpoint("judge", url, max_concurrency=1, max_retries=2, max_tokens=48),
                     "eval.judge.label=smollm2", "eval.judge.max_parse_retries=0"]
        seen = Path(cache_dir) / "responses"
        before = len(list(seen.rglob("*.json")))

        def stop_after_two() -> None:
            deadline = time.time() + 300
            while len(list(seen.rglob("*.json"))) < before + 2 and time.time() < deadline:
                time.sleep(0.2)
            _server("stop", port, folder)

        watcher = threading.Thread(target=stop_after_two)
        watcher.start()
        with pytest.raises(EndpointError) as failed:
            evaluate_model(_tiny_base(cache_dir), overrides, tmp_path / "eval")
        watcher.join()
        message = str(failed.value)
        assert message.startswith(f"endpoint {url} (judge) unreachable after 3 tries") and "\n" not in message
        done = len(list(seen.rglob("*.json"))) - before
        assert 2 <= done < 8
        _server("start", port, folder)
        assert llm_answers(url)
        try:  # SmolLM2 may not give one parseable score; the cache says what was sent either way
            record = evaluate_model(_tiny_base(cache_dir), overrides, tmp_path / "eval")
            assert record["usage"]["judge"]["cached"] == done
        except ValueError as e:
            assert "could not be parsed" in str(e)
        assert len(list(seen.rglob("*.json"))) - before == 8  # 4 trajectories x 2 metrics: the rest sent once
    finally:
        _server("stop", port, folder)
