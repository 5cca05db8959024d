"""``agent-safety retry``: which runs of a real Hydra sweep dir it relaunches, and with what command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, pinned

from agent_safety.launch.retry import Job, expand, job_statuses, load_sweep, relaunch_command, single_grid, to_relaunch


def test_single_grid_rebuilds_one_sweep_or_says_it_cannot() -> None:
    jobs = [("schedule=S", "seed=1", "+sweep=orders"), ("schedule=H", "seed=1", "+sweep=orders")]
    assert single_grid(jobs) == ["schedule=S,H", "seed=1", "+sweep=orders"]
    assert single_grid(jobs[:1]) == list(jobs[0])
    square = [(f"schedule={s}", f"seed={n}") for s in ("S", "H") for n in (0, 2)]
    assert single_grid(square) == ["schedule=S,H", "seed=0,2"]
    assert single_grid([("schedule=S", "seed=0"), ("schedule=H", "seed=1")]) is None  # a diagonal
    assert single_grid([("a=[1,2]", "b=0"), ("a=[3]", "b=0")]) is None  # values that commas would split
    assert single_grid([]) is None


@pytest.fixture(scope="module")
def orders_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real multirun.yaml from Hydra: the orders preset, whose 15 jobs each stop at config validation."""
    runs = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "AGENT_SAFETY_RUNS": str(runs), "AGENT_SAFETY_CACHE": str(runs / ".cache")}
    args = pinned(["+sweep=orders", "trainer.max_length=8"])
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stderr.count("trainer.max_length must be >= 16") == 15, done.stderr[-2000:]
    (sweep,) = (runs / "orders" / ".sweep").iterdir()
    return sweep


def test_a_run_stopped_by_its_config_in_a_sweep_is_recorded_failed(tmp_path: Path) -> None:
    """Before its run dir had a status, a config error left the run "missing": retry could not tell it failed."""
    runs = tmp_path / "runs"
    args = ["-m", "trainer.beta=0", f"paths.runs_dir={runs}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"]
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *pinned(args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "error: trainer.beta must be > 0" in done.stderr, done.stderr[-2000:]
    (status_file,) = runs.glob("*/*/status.json")
    status = json.loads(status_file.read_text())
    assert status["status"] == "failed" and status["run_id"] == status_file.parent.name
    assert status["error"].startswith("ConfigError: trainer.beta must be > 0")
    (sweep_dir,) = runs.glob("*/.sweep/*")
    sweep = load_sweep(sweep_dir)
    (job,) = job_statuses(sweep, expand(sweep))
    assert job.status == "failed" and job.run_dir == status_file.parent and [job] == to_relaunch([job])
    # the sweep ends with its table: the run, its error under it, the counts, the command that aggregates it
    table = done.stdout.splitlines()[-6:]
    assert table[0] == f"sweep {sweep_dir}:" and table[1].split() == ["run", "config", "seed", "status"]
    assert table[2].split() == [job.run_id, "model=tiny", "eval=estimate", "trainer.beta=0", "0", "failed"]
    assert table[3].strip().startswith("ConfigError: trainer.beta must be > 0")
    group = status_file.parent.parent
    assert table[4:] == ["1 run: 0 completed, 1 failed",
                         f"aggregate: agent-safety aggregate {group} --out {group}/aggregate"]


def _status(target: Job, **status: object) -> None:
    target.run_dir.mkdir(parents=True, exist_ok=True)
    (target.run_dir / "status.json").write_text(json.dumps({"run_id": target.run_id, **status}))


def test_retry_picks_failed_missing_and_stale_runs_only(orders_sweep: Path, tmp_path: Path) -> None:
    sweep = load_sweep(orders_sweep)
    assert sweep.runs_dir == orders_sweep.parents[2] and sweep.launcher == "local" and sweep.sweeper == "basic"
    grid = expand(sweep)
    assert len(grid) == 15 and len(set(grid)) == 15
    jobs = job_statuses(sweep, grid)
    # each job stopped at validation, and its run dir says so
    assert all(j.status == "failed" for j in jobs) and len({j.run_id for j in jobs}) == 15
    assert all("trainer.max_length must be >= 16" in j.detail for j in jobs)
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now names no process
    host = socket.gethostname()
    for j in jobs:
        _status(j, status="completed")
    failed, live, stale = jobs[3], jobs[4], jobs[7]  # (H, 0), (H, 1), (S_H, 1)
    _status(failed, status="failed", error="OSError: disk full")
    _status(live, status="running", job={"host": host, "pid": os.getpid()})
    _status(stale, status="running", job={"host": host, "pid": gone.pid})

    jobs = job_statuses(sweep, grid)
    pending = to_relaunch(jobs)
    assert [j.run_id for j in pending] == [failed.run_id, stale.run_id]
    assert jobs[4].alive is True and jobs[7].alive is False and jobs[3].detail == "OSError: disk full"
    cmd, exact = relaunch_command(sweep, jobs, pending)
    # (H, 0) and (S_H, 1) differ in two keys: no single grid, so the whole sweep goes again
    assert not exact and cmd[1] == str(ROOT / "launch.py") and "+sweep=orders" in cmd
    cmd, exact = relaunch_command(sweep, jobs, pending[:1])
    assert exact and [o for o in cmd if o.startswith(("schedule=", "seed="))] == list(failed.overrides[:2])
    assert f"paths.runs_dir={sweep.runs_dir}" in cmd

    out = subprocess.run([sys.executable, "-m", "agent_safety.cli", "retry", str(orders_sweep), "--dry-run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "15 runs (12 completed, 1 failed, 2 running), 2 to relaunch" in out.stdout
    assert "still alive" in out.stdout and "OSError: disk full" in out.stdout
    assert not list((sweep.runs_dir / "orders").glob(f"{failed.run_id}/eval/*/metrics.jsonl"))  # nothing ran


def test_retry_of_a_folder_without_multirun_yaml_is_a_one_line_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "agent_safety.cli", "retry", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "multirun.yaml not found" in out.stderr and "Traceback" not in out.stderr

