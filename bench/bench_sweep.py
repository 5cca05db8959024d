"""The ``orders`` sweep (5 schedules x 3 seeds = 15 default runs) through ``hydra/launcher=submitit_local``.

Goal: under 15 minutes on this 2-core machine. submitit's local executor starts every job of the sweep at
once; each gets one torch thread (``agent_safety.launch.run.thread_share``). Reports the wall time, and per run
its status, torch threads (from status.json), wall time, how long its process took to its first training
step under that contention (and in which stage), and which stages it adopted from another run (``reuse``:
S_H starts with S's stage, H_S with H's).

    python bench/bench_sweep.py [--sweep orders] [--cache DIR] [--keep DIR] [-- extra overrides]

It takes a while (measured: see the README's Speed section); run it once. Without --cache the caches start empty,
as on a fresh checkout: the tiny model, the synthetic data and the base log-probs are built by the jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 15 * 60
FIRST = re.compile(r"(stage_\d+): first training step, ([\d.]+) s after the process started")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="orders")
    parser.add_argument("--cache", type=Path, default=None, help="cache dir to use (default: a fresh one)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        runs = args.keep or Path(tmp) / "runs"
        cache = args.cache or Path(tmp) / "cache"
        cmd = [sys.executable, str(ROOT / "launch.py"), f"+sweep={args.sweep}", "hydra/launcher=submitit_local",
               f"paths.runs_dir={runs}", f"paths.cache_dir={cache}", "logger=none", *args.overrides]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "offline"}
        print("$", " ".join(cmd), flush=True)
        t0 = time.time()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if done.returncode != 0:
            raise SystemExit(f"sweep failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        statuses = sorted(runs.glob("*/*/status.json"))
        print(f"{'run':<11} {'status':<10} {'threads':>7} {'wall':>8} {'first step':>17} {'adopted':>7}  schedule seed")
        firsts = {}
        for log in runs.glob("*/.sweep/*/.submitit/*/*_log.out"):
            text = log.read_text()
            ages, rid = FIRST.findall(text), re.search(r"\[(\w{10})\] (completed|stage 0)", text)
            if ages and rid:
                firsts[rid.group(1)] = f"{float(ages[0][1]):.1f}s ({ages[0][0]})"
        for path in statuses:
            s = json.loads(path.read_text())
            (metrics,) = path.parent.glob("eval/*/metrics.jsonl")  # a sweep evaluates with one setting
            last = json.loads(metrics.read_text().splitlines()[-1])
            stages = [json.loads(line) for line in (path.parent / "stages.jsonl").read_text().splitlines()]
            adopted = ",".join(str(r["stage"]) for r in stages if r.get("trained_by")) or "-"
            end = s.get("finished") or s["updated"]
            took = (datetime.fromisoformat(end) - datetime.fromisoformat(s["started"])).total_seconds()
            first = firsts.get(s["run_id"], "-")
            print(f"{s['run_id']:<11} {s['status']:<10} {s['job']['threads']:>7} {took:>7.0f}s {first:>17} "
                  f"{adopted:>7}  {last['schedule']} {last['seed']}")
        ok = "under" if wall < GOAL_S else "OVER"
        print(f"{len(statuses)} runs in {wall / 60:.1f} min ({ok} the {GOAL_S // 60} min goal)", flush=True)


if __name__ == "__main__":
    main()
