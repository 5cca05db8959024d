"""Agent generation on the tiny model: batched (``eval.agent.batch_size``) against one prompt at a time.

N synthetic agent prompts (the project's agent template when ``prompts.py`` renders it, else a system message
with the case's tools in full and the user instruction), 64 new tokens each, greedy, the stop string the
rollout passes, 2 torch threads. Goal: batched at least 4x faster than one at a time on 2 cores.
Also checks that every batched generation equals its one-at-a-time generation token for token.

    python bench/bench_generation.py [--n 32] [--new-tokens 64] [--threads 2] [--batch-sizes 32 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 4.0


def settings() -> dict[str, str]:
    """The agent's environment setup, as the evaluation's config gives it."""
    from agent_safety.config.schema import AgentConfig

    cfg = AgentConfig()
    return {"user_name": cfg.user_name, "user_email": cfg.user_email, "current_time": cfg.current_time}


def agent_prompts(bench: Any, n: int) -> tuple[list[list[dict[str, str]]], str]:
    """``n`` agent prompts over the synthetic cases (cycled), rendered as the rollout renders them."""
    from types import SimpleNamespace

    from agent_safety.agent.prompts import Prompts

    cases = list(bench.cases.values())
    cases = [cases[i % len(cases)] for i in range(n)]
    prompts, env = Prompts.load(), SimpleNamespace(**settings())
    return [prompts.agent(c, [bench.toolkits[k] for k in c["Toolkits"]], "", env) for c in cases], \
        "prompts.py agent template"


def timed(agent: Any, prompts: list, new_tokens: int, one_at_a_time: bool) -> tuple[float, list]:
    stop = ["\nObservation:"]
    t0 = time.perf_counter()
    if one_at_a_time:
        out = [agent.generate([p], [new_tokens], stop)[0] for p in prompts]
    else:
        out = agent.generate(prompts, [new_tokens] * len(prompts), stop)
    return time.perf_counter() - t0, out


def measure(agents: dict[int, Any], prompts: list, new_tokens: int, repeat: int) -> dict[int, dict[str, Any]]:
    """Best of ``repeat`` wall times per batch size, for ``new_tokens`` and for 1 token (the prefill), the
    modes interleaved so that load from other processes hits them alike."""
    best: dict[int, dict[str, Any]] = {bs: {"wall": float("inf"), "prefill": float("inf")} for bs in agents}
    for _ in range(repeat):
        for bs, agent in agents.items():
            wall, out = timed(agent, prompts, new_tokens, one_at_a_time=bs == 1)
            prefill, _ = timed(agent, prompts, 1, one_at_a_time=bs == 1)
            row = best[bs]
            row["wall"], row["prefill"], row["out"] = min(row["wall"], wall), min(row["prefill"], prefill), out
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per mode")
    parser.add_argument("--dynamic-cache", action="store_true", help="transformers' default cache, not static")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "agent-safety-bench-cache")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformers

    from agent_safety.config.compose import compose
    from agent_safety.data.benchmark import load_data
    from agent_safety.evaluate.generative.agent import TransformersAgent, render
    from agent_safety.train.models import load_model, load_tokenizer, resolve_base

    torch.set_num_threads(args.threads)
    cfg = compose([f"paths.cache_dir={args.cache_dir}", f"paths.runs_dir={args.cache_dir / 'runs'}", "model=tiny"])
    bench = load_data(cfg.data, args.cache_dir)
    path, _ = resolve_base(cfg.model, bench, args.cache_dir)
    tokenizer, model = load_tokenizer(path, cfg.model), load_model(path, cfg.model)
    prompts, source = agent_prompts(bench, args.n)
    lengths = sorted(len(render(tokenizer, p)) for p in prompts)

    agents = {bs: TransformersAgent(model, tokenizer, batch_size=bs, static_cache=not args.dynamic_cache)
              for bs in [1, *args.batch_sizes]}
    timed(agents[1], prompts[:2], 8, one_at_a_time=False)  # warm-up: first-call allocations, stop-string index
    load_before = os.getloadavg()[0]
    best = measure(agents, prompts, args.new_tokens, args.repeat)

    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
          f"torch {torch.__version__} ({args.threads} threads), transformers {transformers.__version__}; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"model: tiny ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
          f"{model.config.num_hidden_layers} layers), window {model.config.max_position_embeddings}, "
          f"{'dynamic' if args.dynamic_cache else 'static'} KV cache")
    print(f"prompts: {args.n} x {source}; tokens min/median/max {lengths[0]}/{lengths[len(lengths) // 2]}/"
          f"{lengths[-1]}; {args.new_tokens} new tokens each, greedy, stop '\\nObservation:'; "
          f"best of {args.repeat}")
    print(f"{'mode':<14} {'batch':>5} {'wall s':>7} {'prefill s':>9} {'decode s':>8} {'new tok/s':>9} "
          f"{'speed-up':>8} {'decode speed-up':>15} {'same tokens':>11}")
    base = best[1]
    for bs, row in best.items():
        tokens = sum(g.completion_tokens for g in row["out"])
        same = sum(a == b for a, b in zip(row["out"], base["out"], strict=True))
        decode, base_decode = row["wall"] - row["prefill"], base["wall"] - base["prefill"]
        print(f"{'one at a time' if bs == 1 else 'batched':<14} {bs:>5} {row['wall']:>7.2f} {row['prefill']:>9.2f} "
              f"{decode:>8.2f} {tokens / row['wall']:>9.0f} {base['wall'] / row['wall']:>7.1f}x "
              f"{base_decode / decode:>14.1f}x {same:>5}/{len(row['out'])}")
    speedup = max(base["wall"] / row["wall"] for bs, row in best.items() if bs != 1)
    print(f"best speed-up {speedup:.1f}x (goal >= {GOAL:.0f}x): {'met' if speedup >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
