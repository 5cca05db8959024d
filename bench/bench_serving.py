"""Benchmark of serving with vLLM's CPU build (tests/llm/vllm.sh): throughput, and stages as adapters vs merged.

1. Requests/s and generated tokens/s at concurrency 1, 8 and 32 against a running OpenAI-compatible server
   (default: the vLLM test server; ``--url`` the llama.cpp one to compare), each with a fresh response cache.
2. The generative evaluation of a trained S_H run's three stages (0, 1, 2), two ways, each on a server of its
   own started for it (port 18082): ONE server holding the base model with every stage's stacked adapter loaded
   by name (``eval/agent=vllm_server``), against one server per stage started on that stage's merged folder.
   Reports wall time (server starts included) and the peak resident memory of the server processes.
   ``--run`` names a run dir (stacked adapters and merged models); without it a SmolLM2 S_H run of two short
   stages is trained first (minutes).
3. ``--disk``: disk per stage, merged model against adapters, computed from the model configurations (the tiny
   preset, SmolLM2-135M, Llama-3.1-8B's shape) for LoRA r 16 on every linear layer; ``--run`` checks the tiny or
   SmolLM2 numbers against the files of a run.

    python bench/bench_serving.py [--requests 32] [--max-tokens 32] [--cases 8] [--run RUN_DIR] [--skip-stages]
    python bench/bench_serving.py --disk [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_endpoint import requests, run  # noqa: E402

MODEL = "smollm2-135m"
PORT = 18082
#: Two SmolLM2 stages of a few DPO steps (as tests/test_vllm.py trains them).
TRAIN = ["model=smollm2-135m", "schedule=S_H", "threads=2", "trainer.max_steps=2", "trainer.max_pairs=32",
         "trainer.per_device_train_batch_size=1", "trainer.gradient_accumulation_steps=1", "trainer.max_length=440",
         "logger=none", "eval=estimate", "eval.max_cases=2"]


def throughput(url: str, n: int, max_tokens: int) -> list[dict[str, float]]:
    rows = []
    for concurrency in (1, 8, 32):
        with tempfile.TemporaryDirectory() as cache:
            rows.append({"concurrency": concurrency, **run(url, MODEL, Path(cache), requests(n, max_tokens),
                                                           concurrency)})
    return rows


def adapter_cost(url: str, adapter: Path) -> list[tuple[int, float, float]]:
    """(prompt tokens, base model s, adapter s) of one request of 16 generated tokens, prompts of ~70-930 tokens:
    what serving a stage as an adapter costs over its base model on this server."""
    import json
    import urllib.request

    from agent_safety.evaluate.generative.adapters import adapter_name, load_adapter

    name = adapter_name(adapter, 0)
    load_adapter(url, name, adapter, "sk-bench")

    def chat(model: str, words: int) -> tuple[float, int]:
        body = {"model": model, "messages": [{"role": "user", "content": " ".join(["apple banana"] * words)}],
                "max_tokens": 16, "min_tokens": 16, "temperature": 0}
        request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=900) as r:
            prompt = json.load(r)["usage"]["prompt_tokens"]
        return time.perf_counter() - start, prompt

    rows = []
    for words in (20, 200, 450):
        base, prompt = chat(MODEL, words)
        rows.append((prompt, base, chat(name, words)[0]))
    return rows


class PeakRss:
    """Peak resident memory of a process and its descendants, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(rss(p) for p in tree(self.pid)))
            time.sleep(0.2)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError):
        return 0


class Server:
    """A vLLM server of its own (tests/llm/vllm.sh on PORT), serving ``model`` (None: the SmolLM2 base)."""

    def __init__(self, model: Path | None, folder: Path) -> None:
        self.env = {**os.environ, "VLLM_TEST_PORT": str(PORT), "VLLM_TEST_DIR": str(folder), "PYTHON": sys.executable}
        if model is not None:
            self.env["VLLM_TEST_MODEL"] = str(model)
        self.folder = folder

    def __enter__(self) -> Server:
        start = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "tests" / "llm" / "vllm.sh"), "start"], env=self.env, check=True,
                       capture_output=True, timeout=900)
        self.start_s = time.perf_counter() - start
        self.pid = int((self.folder / "server.pid").read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["bash", str(ROOT / "tests" / "llm" / "vllm.sh"), "stop"], env=self.env, check=False,
                       capture_output=True, timeout=120)


def fresh_cache(shared: Path, tmp: Path) -> Path:
    """A cache dir with no cached responses that shares the converted models and data of ``shared``."""
    cache = Path(tempfile.mkdtemp(dir=tmp))
    for part in shared.iterdir():
        if part.name != "responses":
            (cache / part.name).symlink_to(part.resolve())
    return cache


def eval_overrides(cases: int, token_limit: int, cache: Path) -> list[str]:
    return [f"paths.cache_dir={cache}", "logger=none", "threads=2", "eval=generative", f"eval.max_cases={cases}",
            f"eval.agent.token_limit={token_limit}", f"eval.agent.max_tokens_per_step={min(64, token_limit)}",
            f"eval.agent.endpoint.base_url=http://127.0.0.1:{PORT}/v1", f"eval.agent.endpoint.model={MODEL}",
            "eval.agent.endpoint.timeout_s=900"]


def fresh_run(run_dir: Path, tmp: Path) -> Path:
    """A copy of the run (hard links) without its evaluations, so every arm scores every stage."""
    import shutil

    copy = tmp / "runs" / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, copy, copy_function=os.link, ignore=shutil.ignore_patterns("eval"))
    return copy


def stages_with_adapters(run_dir: Path, cases: int, token_limit: int, cache: Path, tmp: Path) -> dict[str, Any]:
    from agent_safety.run.evaluate_cli import evaluate_run

    run_dir = fresh_run(run_dir, tmp)
    start = time.perf_counter()
    with Server(None, tmp / "adapters") as server, PeakRss(server.pid) as peak:
        evaluate_run(run_dir, [*eval_overrides(cases, token_limit, fresh_cache(cache, tmp)), "eval/agent=vllm_server",
                               "eval.name=bench-adapters"])
    return {"wall_s": time.perf_counter() - start, "starts_s": server.start_s, "peak_rss": peak.peak}


def stages_merged(run_dir: Path, cases: int, token_limit: int, cache: Path, tmp: Path) -> dict[str, Any]:
    from agent_safety.run.evaluate_cli import evaluate_model
    from agent_safety.train.export import base_of

    base = Path(base_of(run_dir / "stage_1" / "stacked"))
    start, starts, peaks = time.perf_counter(), 0.0, []
    for k, folder in enumerate([base, run_dir / "stage_1" / "model", run_dir / "stage_2" / "model"]):
        with Server(folder, tmp / f"merged{k}") as server, PeakRss(server.pid) as peak:
            evaluate_model(str(folder), [*eval_overrides(cases, token_limit, fresh_cache(cache, tmp)),
                                         "model=smollm2-135m",
                                         "eval/agent=openai"], tmp / f"merged-eval{k}")
        starts += server.start_s
        peaks.append(peak.peak)
    return {"wall_s": time.perf_counter() - start, "starts_s": starts, "peak_rss": max(peaks)}


def train_run(cache: Path, tmp: Path) -> Path:
    from agent_safety.config.compose import compose
    from agent_safety.run.schedule import run_schedule

    return run_schedule(compose([*TRAIN, f"paths.runs_dir={tmp / 'runs'}", f"paths.cache_dir={cache}"])).run_dir


def sizes(cfg: dict[str, Any], r: int = 16, weight_bytes: int = 2) -> tuple[float, float]:
    """(merged model bytes at ``weight_bytes`` per weight, one stage's LoRA adapter bytes in float32) for a
    Llama-shaped config: LoRA on q, k, v, o, gate, up, down of every layer (``all-linear`` less the head)."""
    d, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * (cfg.get("head_dim") or d // cfg["num_attention_heads"])
    linear = [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    per_layer = sum(i * o for i, o in linear) + 2 * d
    params = layers * per_layer + cfg["vocab_size"] * d * (1 if cfg.get("tie_word_embeddings") else 2) + d
    lora = layers * sum(r * (i + o) for i, o in linear)
    return params * weight_bytes, lora * 4


def disk(run_dir: Path | None, cache: Path) -> None:
    import json

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_gpu import SHAPES

    models = {"SmolLM2-135M (float32)": (next((cache / "models").glob("gguf-SmolLM2-*"), None), 4),
              "tiny (float32)": (next((cache / "models").glob("tiny-*"), None), 4)}
    rows = [(name, json.loads((folder / "config.json").read_text()), nbytes)
            for name, (folder, nbytes) in models.items() if folder is not None]
    rows.append(("Llama-3.1-8B (bfloat16)", SHAPES["8b"], 2))
    print(f"\n{'model':<26}{'merged stage':>14}{'adapter':>10}{'stacked k':>12}{'S_H run, merged':>18}"
          f"{'S_H run, adapters':>19}")
    for name, cfg, nbytes in rows:
        merged, adapter = sizes(cfg, weight_bytes=nbytes)
        print(f"{name:<26}{human(merged):>14}{human(adapter):>10}{'k x ' + human(adapter):>12}{human(2 * merged):>18}"
              f"{human(adapter * (1 + 1 + 1 + 2)):>19}")
    if run_dir is not None:
        for k in (1, 2):
            stage = run_dir / f"stage_{k}"
            print(f"{stage}: " + ", ".join(f"{part} {human(sum(f.stat().st_size for f in (stage / part).rglob('*')))}"
                                           for part in ("model", "adapter", "stacked") if (stage / part).exists()))


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AGENT_SAFETY_TEST_VLLM_URL", "http://127.0.0.1:18081/v1"))
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--cases", type=int, default=8, help="test cases per stage (the study: 64)")
    parser.add_argument("--token-limit", type=int, default=128, help="agent tokens per episode (the study: 8000)")
    parser.add_argument("--run", type=Path, default=None, help="a trained S_H run dir (default: train one)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("AGENT_SAFETY_CACHE",
                                                                          Path.home() / ".cache/agent-safety")))
    parser.add_argument("--skip-stages", action="store_true", help="only the throughput part")
    parser.add_argument("--skip-throughput", action="store_true", help="only the stages part")
    parser.add_argument("--disk", action="store_true", help="only the disk-per-stage table")
    args = parser.parse_args()
    if args.disk:
        disk(args.run, args.cache)
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["WANDB_MODE"] = "disabled"
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}; {args.url}")

    if not args.skip_throughput:
        print(f"\n{args.requests} chat requests of at most {args.max_tokens} tokens, fresh cache each")
        print(f"{'concurrency':>11}{'wall s':>9}{'req/s':>8}{'tok/s':>8}{'speed-up':>10}")
        rows = throughput(args.url, args.requests, args.max_tokens)
        for r in rows:
            print(f"{r['concurrency']:>11}{r['wall']:>9.2f}{r['n'] / r['wall']:>8.2f}{r['tokens'] / r['wall']:>8.1f}"
                  f"{rows[0]['wall'] / r['wall']:>9.2f}x")
        if args.run is not None:
            print("\none request, 16 tokens generated: the base model against the run's stage-2 stacked adapter")
            print(f"{'prompt tokens':>13}{'base s':>9}{'adapter s':>11}")
            for prompt, base, lora in adapter_cost(args.url, args.run / "stage_2" / "stacked"):
                print(f"{prompt:>13}{base:>9.2f}{lora:>11.2f}")
    if args.skip_stages:
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or train_run(args.cache, Path(tmp))
        print(f"\nS_H run {run_dir}: stages 0-2, {args.cases} cases each (token_limit {args.token_limit}), "
              "a server started per arm")
        print(f"{'arm':<34}{'wall s':>9}{'starts s':>10}{'peak RSS GiB':>14}")
        for name, fn in (("one server, stacked adapters", stages_with_adapters),
                         ("a server per merged stage", stages_merged)):
            r = fn(run_dir, args.cases, args.token_limit, args.cache, Path(tmp))
            print(f"{name:<34}{r['wall_s']:>9.1f}{r['starts_s']:>10.1f}{r['peak_rss'] / 2**30:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
