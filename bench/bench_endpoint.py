"""Benchmark of the endpoint client against the local llama.cpp server of tests/llm/server.sh.

Three cases: 16 short chat requests sent one at a time, the same 16 with up to 8 in flight (each case with a
fresh cache, so everything is sent), and a rerun of 64 requests that are all in the cache (goal: < 2 s, no
request sent). Reports requests/s and generated tokens/s, best of ``--repeat`` fresh-cache runs (the cases
alternate, so other load on the shared server hits both alike). The server must be up
(``bash tests/llm/server.sh start``); it is found at ``$AGENT_SAFETY_TEST_LLM_URL``
(default ``http://127.0.0.1:18080/v1``).

    python bench/bench_endpoint.py [--max-tokens 32] [--repeat 3] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_safety.evaluate.generative.client import ChatRequest, Endpoint, EndpointError  # noqa: E402

TOPICS = ["rivers", "bread", "owls", "trains", "glass", "maps", "tea", "bees", "snow", "clocks", "salt", "kites",
          "moss", "ink", "bells", "caves"]


def requests(n: int, max_tokens: int) -> list[ChatRequest]:
    """``n`` distinct short questions (replicates past the 16 topics)."""
    return [ChatRequest([{"role": "user", "content": f"In one sentence, what is interesting about {topic}?"}],
                        max_tokens=max_tokens, replicate=i // len(TOPICS))
            for i, topic in ((i, TOPICS[i % len(TOPICS)]) for i in range(n))]


def run(url: str, model: str, cache: Path, batch: list[ChatRequest], concurrency: int) -> dict[str, float]:
    """One ``complete()`` of the batch: wall time, and what was sent and generated."""
    cfg = SimpleNamespace(base_url=url, model=model, api_key_env=None, max_concurrency=concurrency,
                          timeout_s=120.0, max_retries=2, seed=0)
    endpoint = Endpoint(cfg, cache, "bench")
    start = time.perf_counter()
    endpoint.complete(batch, desc=f"concurrency {concurrency}")
    wall = time.perf_counter() - start
    usage = endpoint.usage
    return {"wall": wall, "sent": usage.requests_sent, "cached": usage.cached, "n": len(batch),
            "tokens": usage.completion_tokens, "prompt": usage.prompt_tokens}


def row(name: str, r: dict[str, float]) -> str:
    tps = f"{r['tokens'] / r['wall']:10.1f}" if r["tokens"] else f"{'-':>10}"
    return (f"{name:<36}{r['n']:>5}{r['sent']:>6}{r['cached']:>7}{r['wall']:>9.2f}{r['n'] / r['wall']:>10.1f}"
            f"{r['tokens']:>8}{tps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AGENT_SAFETY_TEST_LLM_URL", "http://127.0.0.1:18080/v1"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per case")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        probe = SimpleNamespace(base_url=args.url, model=args.model, api_key_env=None, max_concurrency=1,
                                timeout_s=5.0, max_retries=0, seed=0)
        try:
            Endpoint(probe, Path(tmp), "bench").check()
        except EndpointError as e:
            sys.exit(f"{e}\nstart the server: bash tests/llm/server.sh start")
        # warm the server (first request loads caches) without touching the measured caches
        run(args.url, args.model, Path(tmp, "warm"), requests(1, 4), 1)

        sixteen = requests(16, args.max_tokens)
        serial, parallel = [], []
        for i in range(args.repeat):  # alternated, so load from elsewhere hits both alike
            serial.append(run(args.url, args.model, Path(tmp, f"c1-{i}"), sixteen, 1))
            parallel.append(run(args.url, args.model, Path(tmp, f"c8-{i}"), sixteen, 8))
        serial, parallel = (min(runs, key=lambda r: r["wall"]) for runs in (serial, parallel))
        many = requests(64, args.max_tokens)
        run(args.url, args.model, Path(tmp, "c64"), many, 8)  # fill the cache
        rerun = min((run(args.url, args.model, Path(tmp, "c64"), many, 8) for _ in range(3)),
                    key=lambda r: r["wall"])
        assert rerun["sent"] == 0, "the cached rerun sent requests"

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
          f"server {args.url} model {args.model}, max_tokens {args.max_tokens}")
    print(f"{'case':<36}{'reqs':>5}{'sent':>6}{'cached':>7}{'wall s':>9}{'req/s':>10}{'tokens':>8}{'tok/s':>10}")
    print(row(f"16 sent, concurrency 1 (best of {args.repeat})", serial))
    print(row(f"16 sent, concurrency 8 (best of {args.repeat})", parallel))
    print(row("64 cached (best of 3)", rerun))
    print(f"concurrency 8 / 1 throughput: {serial['wall'] / parallel['wall']:.2f}x; "
          f"cached rerun of 64: {rerun['wall']:.3f} s (goal < 2 s: {'met' if rerun['wall'] < 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
