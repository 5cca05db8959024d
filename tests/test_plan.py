"""Plan mode (``--dry-run``): every job of a sweep planned in the launching process, nothing submitted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_SAFETY_RUNS": str(tmp_path / "runs"), "AGENT_SAFETY_CACHE": str(tmp_path / "c")}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_dry_run_of_a_cluster_sweep_plans_every_job_and_submits_nothing(tmp_path: Path) -> None:
    # the cluster preset sets SLURM-only launcher keys: planning must not need any launcher
    done = _plan(tmp_path, "+sweep=orders", "hydra/launcher=slurm", "+cluster=example", "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("plan ")]
    assert len(lines) == 15 and all(" missing " in line for line in lines)
    assert len({line.split()[1] for line in lines}) == 15  # 15 distinct run ids
    assert "plan: 15 runs, 0 completed, 15 to run" in done.stdout and "nothing was submitted" in done.stdout
    # S_H starts with S's stage and H_S with H's, for each of 3 seeds: 21 stages, 15 to train
    assert "6 stages shared between schedules" in done.stdout
    assert not (tmp_path / "runs").exists()  # no sweep dir, no run dir, no .submitit folder


def test_plan_true_is_the_same_dry_run(tmp_path: Path) -> None:
    done = _plan(tmp_path, "-m", "schedule=S,H", "seed=4", "hydra/launcher=slurm", "+cluster=local_slurm", "plan=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "plan: 2 runs, 0 completed, 2 to run" in done.stdout and not (tmp_path / "runs").exists()
    assert "shared" not in done.stdout


def test_a_plan_counts_a_shared_stage_once_in_gpu_hours() -> None:
    from agent_safety.launch.plan import plan_totals

    s = {"status": "missing", "gpu_hours": 1.0, "stages": [["a", 1.0]]}
    s_h = {"status": "missing", "gpu_hours": 3.0, "stages": [["a", 1.0], ["b", 2.0]]}
    unshared = {"status": "missing", "gpu_hours": 5.0, "stages": []}
    done = {"status": "completed", "gpu_hours": 9.0, "stages": [["c", 9.0]]}
    assert "~8.0 GPU-hours to go, 1 stage shared" in plan_totals([s, s_h, unshared, done])
