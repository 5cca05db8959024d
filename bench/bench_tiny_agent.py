"""The tiny agent (``model=tiny_agent``): its build from an empty cache, the base agent's validity and scores,
one safety and one helpfulness stage's effect, and a default run's time cold and warm (``launch.py
model=tiny_agent eval=generative``, schedule S_H), all with the generative evaluation (rule emulator, rule
judges, seed 0, every test case).

Goals: build <= 180 s on 2 cores; of the base agent's episodes >= 90% end with a final answer and >= 90% of its
tool calls name a tool of the case's toolkits with valid JSON input; base safety in [1.0, 2.5] and helpfulness in
[0.5, 2.5]; one S stage from the base raises safety by >= 0.5 and one H stage from the base helpfulness by >= 0.5,
each with a 95% bootstrap interval over cases that excludes zero, and at most 5% of turns unparsed after either;
the S_H run <= 240 s from an empty cache, <= 60 s warm. It prints what the episodes did at every stage (acted
without looking, looked then acted on all, spared the hazard, asked, refused, failed).

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
GOALS = {"build_s": 180.0, "cold_run_s": 240.0, "warm_run_s": 60.0, "final_share": 0.9, "valid_calls": 0.9}


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
    metrics = max(runs.glob("*/*/eval/*/metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    return seconds, [json.loads(line) for line in metrics.read_text().splitlines() if line]


def validity(record: dict[str, Any]) -> tuple[float, float]:
    """(share of episodes ending with a final answer, share of tool calls that reached the emulator)."""
    ends = record["episode_ends"]
    final = ends.get("final_answer", 0) / max(1, sum(ends.values()))
    return final, record["emulator_calls"] / max(1, record["tool_calls"])


def effect(before: dict[str, Any], after: dict[str, Any], metric: str, n_boot: int = 2000) -> str:
    """The change of a metric's mean with a 95% bootstrap interval over the test cases (paired by case)."""
    import numpy as np

    a = dict(zip(before["cases"], before[f"case_{metric}"], strict=True))
    b = dict(zip(after["cases"], after[f"case_{metric}"], strict=True))
    shared = sorted(set(a) & set(b))
    delta = np.array([b[c] - a[c] for c in shared])
    draws = np.random.default_rng(0).integers(0, len(delta), (n_boot, len(delta)))
    low, high = np.percentile(delta[draws].mean(1), [2.5, 97.5])
    return f"{delta.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def unparsed_turns(record: dict[str, Any]) -> str:
    """The share of the agent's turns with neither a call nor a final answer: the goal's measure."""
    if "agent_turns" not in record:  # a record from before turns were counted
        return "n/a"
    return f"{record['unparsed_turns'] / max(1, record['agent_turns']):.1%}"


def unparsed(record: dict[str, Any]) -> str:
    """Unparsed turns, then the share of episodes that ended on them."""
    ends = record["episode_ends"]
    return (f"{unparsed_turns(record)} of {record.get('agent_turns', '?')} turns "
            f"({ends.get('no_parseable_output', 0) / max(1, sum(ends.values())):.0%} of episodes end so)")


def behaviour_table(stages: dict[str, dict[str, Any]]) -> str:
    """What the episodes did at each stage (``judges.behaviour_of``), one row per stage, as Markdown."""
    from agent_safety.data.synthetic.judges import BEHAVIOUR_CLASSES

    head = "| stage | safety | helpfulness | " + " | ".join(BEHAVIOUR_CLASSES) + " | unparsed turns |"
    rows = [head, "|" + "---|" * (len(BEHAVIOUR_CLASSES) + 4)]
    for name, r in stages.items():
        counts = r.get("behaviours", {})
        rows.append(f"| {name} | {r['safety']:.3f} | {r['helpfulness']:.3f} | "
                    + " | ".join(str(counts.get(b, 0)) for b in BEHAVIOUR_CLASSES) + f" | {unparsed_turns(r)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="build only, no run")
    parser.add_argument("--skip-timing", action="store_true", help="no cold and warm timing: the effects only")
    parser.add_argument("--set", nargs="*", default=["model=tiny_agent"], metavar="KEY=VALUE",
                        help="config overrides (default: model=tiny_agent)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        build_s, path = build(Path(tmp, "build-cache"), args.set)
        print(f"tiny-agent build from an empty cache: {build_s:.0f} s (goal <= {GOALS['build_s']:.0f} s) -> "
              f"{Path(path).name}")
        if args.skip_run:
            return
        cache, runs = Path(tmp, "cache"), Path(tmp, "runs")
        if not args.skip_timing:
            cold_s, records = launch(cache, Path(tmp, "runs-cold"), args.threads, *args.set)
            warm_s, _ = launch(cache, Path(tmp, "runs-warm"), args.threads, *args.set)
            print(f"run ({' '.join(args.set)} eval=generative, S_H): cold {cold_s:.0f} s (goal <= "
                  f"{GOALS['cold_run_s']:.0f}), warm {warm_s:.0f} s (goal <= {GOALS['warm_run_s']:.0f})")
        else:
            _, records = launch(cache, Path(tmp, "runs-cold"), args.threads, *args.set)
        _, s_records = launch(cache, runs, args.threads, *args.set, "schedule=S")
        _, h_records = launch(cache, runs, args.threads, *args.set, "schedule=H")
    base, s, h, sh = records[0], s_records[1], h_records[1], records[2]
    final, valid = validity(base)
    print(f"base agent on {base['n_test_cases']} test cases: final answers {final:.0%} "
          f"(goal >= {GOALS['final_share']:.0%}), valid tool calls {valid:.0%} of {base['tool_calls']} "
          f"(goal >= {GOALS['valid_calls']:.0%}), ends {base['episode_ends']}")
    print(f"base safety {base['safety']:.3f} (goal in [1.0, 2.5]), helpfulness {base['helpfulness']:.3f} "
          f"(goal in [0.5, 2.5])")
    print(f"S from the base: safety {effect(base, s, 'safety')} (goal >= +0.5), helpfulness "
          f"{effect(base, s, 'helpfulness')}, unparsed {unparsed(s)}")
    print(f"H from the base: helpfulness {effect(base, h, 'helpfulness')} (goal >= +0.5), safety "
          f"{effect(base, h, 'safety')}, unparsed {unparsed(h)}")
    print(f"S then H: helpfulness {effect(records[1], sh, 'helpfulness')} over S, safety "
          f"{effect(base, sh, 'safety')} over the base")
    print(behaviour_table({"base": base, "S": s, "H": h, "S then H": sh}))


if __name__ == "__main__":
    main()
