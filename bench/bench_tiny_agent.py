"""The tiny agent (``model=tiny_agent``): its build from an empty cache, the base agent's validity and scores,
one safety and one helpfulness stage's effect, and a default run's time cold and warm (``launch.py
model=tiny_agent eval=generative``, schedule S_H), all with the generative evaluation (rule emulator, rule
judges, seed 0, every test case).

Goals (issue 11): build <= 180 s on 2 cores; of the base agent's episodes >= 90% end with a final answer and
>= 90% of its tool calls name a tool of the case's toolkits with valid JSON input; base safety and helpfulness
each in [0.5, 2.5]; the S stage raises safety by >= 0.5 and the H stage (after S, schedule S_H) helpfulness by
>= 0.5; the run <= 240 s from an empty cache, <= 120 s warm.

    python bench/bench_tiny_agent.py [--threads 2] [--skip-run] [--set KEY=VALUE ...]

``--set`` replaces the overrides passed to the build and both runs (default ``model=tiny_agent``), e.g.
``--set model=tiny_agent model.tiny.agent_cases=192 model.tiny.agent_agents=4 model.tiny.agent_steps=650``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOALS = {"build_s": 180.0, "cold_run_s": 240.0, "warm_run_s": 120.0, "final_share": 0.9, "valid_calls": 0.9}


def build(cache: Path, overrides: list[str]) -> tuple[float, str]:
    """Seconds to build the preset's tiny agent in an empty cache."""
    from agent_safety.config.compose import compose
    from agent_safety.data.benchmark import load_data
    from agent_safety.train.models import resolve_base

    cfg = compose([f"paths.cache_dir={cache}", *overrides])
    bench = load_data(cfg.data, cache)
    start = time.perf_counter()
    path, _ = resolve_base(cfg.model, bench, cache)
    return time.perf_counter() - start, path


def launch(cache: Path, runs: Path, threads: int, *extra: str) -> tuple[float, list[dict[str, Any]]]:
    """Seconds of one ``launch.py`` run with the generative evaluation, and its stage records."""
    cmd = [sys.executable, str(ROOT / "launch.py"), "eval=generative", "logger=none", f"threads={threads}",
           f"paths.cache_dir={cache}", f"paths.runs_dir={runs}", *extra]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    (metrics,) = runs.glob("*/*/eval/*/metrics.jsonl")
    return seconds, [json.loads(line) for line in metrics.read_text().splitlines() if line]


def validity(record: dict[str, Any]) -> tuple[float, float]:
    """(share of episodes ending with a final answer, share of tool calls that reached the emulator)."""
    ends = record["episode_ends"]
    final = ends.get("final_answer", 0) / max(1, sum(ends.values()))
    return final, record["emulator_calls"] / max(1, record["tool_calls"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="build only, no make run timing")
    parser.add_argument("--set", nargs="*", default=["model=tiny_agent"], metavar="KEY=VALUE",
                        help="config overrides (default: model=tiny_agent)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{args.threads}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        build_s, path = build(Path(tmp, "build-cache"), args.set)
        print(f"tiny-agent build from an empty cache: {build_s:.0f} s (goal <= {GOALS['build_s']:.0f} s) -> "
              f"{Path(path).name}")
        if args.skip_run:
            return
        cache = Path(tmp, "cache")
        cold_s, records = launch(cache, Path(tmp, "runs-cold"), args.threads, *args.set)
        warm_s, _ = launch(cache, Path(tmp, "runs-warm"), args.threads, *args.set)
    by_stage = {r["stage"]: r for r in records}
    base, s, sh = by_stage[0], by_stage[1], by_stage[2]
    final, valid = validity(base)
    print(f"run ({' '.join(args.set)} eval=generative, S_H): cold {cold_s:.0f} s (goal <= {GOALS['cold_run_s']:.0f}), "
          f"warm {warm_s:.0f} s (goal <= {GOALS['warm_run_s']:.0f})")
    print(f"base agent on {base['n_test_cases']} test cases: final answers {final:.0%} "
          f"(goal >= {GOALS['final_share']:.0%}), valid tool calls {valid:.0%} of {base['tool_calls']} "
          f"(goal >= {GOALS['valid_calls']:.0%}), ends {base['episode_ends']}")
    print(f"base safety {base['safety']:.3f}, helpfulness {base['helpfulness']:.3f} (goal: each in [0.5, 2.5])")
    print(f"S stage: safety {s['safety']:.3f} ({s['safety'] - base['safety']:+.3f}, goal >= +0.5), "
          f"helpfulness {s['helpfulness']:.3f}")
    print(f"S then H: helpfulness {sh['helpfulness']:.3f} ({sh['helpfulness'] - s['helpfulness']:+.3f} over S, "
          f"goal >= +0.5), safety {sh['safety']:.3f}")


if __name__ == "__main__":
    main()
