"""Benchmark of plan mode and the CLI's start: ``launch.py -m +sweep=paper --dry-run`` (180 runs) and
``agent-safety --help``.

Goals (2-core CPU): the 180-run plan < 5 s, ``--help`` well under a second. Each case runs in a fresh
process (interpreter start and imports included), best of ``--repeat``; runs and caches go to a temporary
folder. The study's data is not needed: without it (``AGENT_SAFETY_TOOLEMU_ROOT`` pointed at an empty folder)
each run is planned without a GPU-hour estimate, which is how a plan first runs on a new machine.

    python bench/bench_plan.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def best_of(repeat: int, cmd: list[str], env: dict[str, str]) -> float:
    """Fastest wall time of ``cmd``: the spread between runs is other processes, not the command."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AGENT_SAFETY_TOOLEMU_ROOT": str(Path(tmp) / "no-data")}
        plan = [sys.executable, "launch.py", "-m", "+sweep=paper", "--dry-run", f"paths.runs_dir={tmp}/runs",
                f"paths.cache_dir={tmp}/cache"]
        cases = {"plan +sweep=paper (180 runs)": (plan, 5.0),
                 "agent-safety --help": ([str(BIN / "agent-safety"), "--help"], 1.0)}
        print(f"{'case':<32} {'best of ' + str(args.repeat):>10} {'goal':>7}")
        for name, (cmd, goal) in cases.items():
            print(f"{name:<32} {best_of(args.repeat, cmd, env):>9.2f}s {goal:>6.1f}s", flush=True)


if __name__ == "__main__":
    main()
