"""Sweeps through real launchers: the single-node SLURM of tests/cluster/slurm.sh, and submitit's local executor.

The ``cluster`` tests need SLURM up (``bash tests/cluster/slurm.sh start``; ``.ci/run`` does it) and skip with
the reason otherwise. Every run is tiny (4 optimiser steps, 8 test cases) and goes through ``launch.py -m``
exactly as a user's sweep would: Hydra, the submitit launcher, sbatch, the job, the run dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import ROOT, pinned, stage_records
from wandb_files import offline_runs, records, run_record

TINY = ("trainer.max_steps=4", "eval.max_cases=8", "trainer.precompute_ref_log_probs=false")
SLURM = ("hydra/launcher=slurm", "+cluster=local_slurm")


def _slurm_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None."""
    if not (shutil.which("sbatch") and shutil.which("scontrol") and shutil.which("sacct")):
        return "SLURM client tools not installed (bash tests/cluster/slurm.sh start installs and starts SLURM)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
        part = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%a"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"SLURM does not answer: {e}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        said = ((ping.stdout or ping.stderr).strip().splitlines() or ["no answer"])[0]
        return f"SLURM is not running ({said}): bash tests/cluster/slurm.sh start"
    if part.stdout.strip() != "up":
        return f"SLURM partition 'debug' is not up ({part.stdout.strip() or part.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = _slurm_problem()
    if problem:
        pytest.skip(problem)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "offline"}


def _command(runs: Path, cache: Path, overrides: Sequence[str], tiny: Sequence[str] = TINY) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"),
            *pinned(["-m", f"paths.runs_dir={runs}", f"paths.cache_dir={cache}", *tiny, *overrides])]


def launch(runs: Path, cache: Path, *overrides: str, timeout: float = 420) -> subprocess.CompletedProcess:
    """Run a sweep to its end; its output is kept next to the runs for a failing test to show."""
    log = runs / f"launch-{time.time_ns()}.log"
    runs.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(_command(runs, cache, overrides), cwd=ROOT, env=_env(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)
    done.stdout = log.read_text()
    return done


def runs_of(group_dir: Path) -> dict[str, dict]:
    """run id -> status.json of every run dir in a group."""
    return {p.parent.name: json.loads(p.read_text()) for p in group_dir.glob("*/status.json")}


def metrics(run_dir: Path) -> list[dict]:
    return stage_records(run_dir)


def assert_same_final(a: Path, b: Path) -> None:
    """The same records, stage by stage, to 1e-6 (the runs are deterministic: in practice bit-identical)."""
    ma, mb = metrics(a), metrics(b)
    assert [r["stage"] for r in ma] == [r["stage"] for r in mb]
    assert not any(r.get("trained_by") for r in ma + mb)  # each trained its stages, none was adopted
    for ra, rb in zip(ma, mb, strict=True):
        assert ra["safety"] == pytest.approx(rb["safety"], abs=1e-6), ra["stage"]
        assert ra["helpfulness"] == pytest.approx(rb["helpfulness"], abs=1e-6), ra["stage"]


def sweep_dirs(group_dir: Path) -> list[Path]:
    return sorted((group_dir / ".sweep").iterdir())


# ---------------------------------------------------------------------------------------------- SLURM


@pytest.fixture(scope="module")
def grid(slurm: None, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, Path]:
    """One 3-run sweep through hydra/launcher=slurm: (runs dir, cache dir)."""
    runs = tmp_path_factory.mktemp("slurm_runs")
    done = launch(runs, cache_dir, *SLURM, "group=grid", "schedule=S,H,SH")
    assert done.returncode == 0, done.stdout[-4000:]
    return runs, cache_dir


@pytest.mark.cluster
def test_slurm_sweep_completes_and_its_records_aggregate(grid: tuple[Path, Path], tmp_path: Path) -> None:
    runs, _ = grid
    found = runs_of(runs / "grid")
    assert len(found) == 3 and {s["status"] for s in found.values()} == {"completed"}
    for rid, status in found.items():
        job = status["job"]
        assert job["executor"] == "slurm" and job["slurm_job_id"] and job["threads"] == 1, job
        assert status["attempt"] == 1
        (wandb_file,) = offline_runs(runs / "grid" / rid)  # one W&B run per job, in the run dir
        run = run_record(wandb_file)
        schedule = metrics(runs / "grid" / rid)[-1]["schedule"]
        assert run.run_group == "grid" and run.job_type == schedule and run.display_name == rid
        objectives = {"S": ["safety"], "H": ["helpfulness"], "SH": ["both"]}[schedule]
        assert list(run.tags) == ["tiny", *objectives, "beta=0.1", "seed=0"]
        exits = [r.exit.exit_code for r in records(wandb_file) if r.WhichOneof("record_type") == "exit"]
        assert exits == [0]  # finish() was called
    out = tmp_path / "aggregate"
    agg = subprocess.run([sys.executable, "-m", "agent_safety.cli", "aggregate", str(runs / "grid"), "--out",
                          str(out), "--no-figures", "--bootstrap", "50"], capture_output=True, text=True, timeout=300)
    assert agg.returncode == 0, agg.stderr[-3000:]
    frontier = json.loads((out / "frontier.json").read_text())
    assert frontier["n"] == 3 and frontier["r2"] is not None  # S, H and SH: three points on the frontier
    runs_csv = (out / "runs.csv").read_text()
    assert all(rid in runs_csv for rid in found) and (out / "summary.md").exists()


@pytest.mark.cluster
def test_resubmitted_sweep_skips_completed_runs(grid: tuple[Path, Path]) -> None:
    runs, cache = grid
    before = {p: p.stat().st_mtime_ns for p in (runs / "grid").glob("*/eval/*/metrics.jsonl")}
    assert len(before) == 3
    done = launch(runs, cache, *SLURM, "group=grid", "schedule=S,H,SH")
    assert done.returncode == 0, done.stdout[-4000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing trained or rewritten
    logs = "".join(p.read_text() for p in sweep_dirs(runs / "grid")[-1].glob(".submitit/*/*_log.out"))
    assert logs.count("already completed, nothing to do") == 3
    assert all(s["attempt"] == 1 for s in runs_of(runs / "grid").values())


@pytest.mark.cluster
def test_retry_relaunches_only_the_missing_run(grid: tuple[Path, Path]) -> None:
    runs, _ = grid
    first = sweep_dirs(runs / "grid")[0]
    victim, *others = sorted((runs / "grid").glob("*/eval/*/metrics.jsonl"))
    kept = {p: p.stat().st_mtime_ns for p in others}
    victim = victim.parents[2]  # the run dir
    shutil.rmtree(victim)
    env = {k: v for k, v in _env().items() if k != "AGENT_SAFETY_RUNS"}
    out = subprocess.run([sys.executable, "-m", "agent_safety.cli", "retry", str(first)], cwd=runs, env=env,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "3 runs (2 completed, 1 missing), 1 to relaunch" in out.stdout and "exactly these runs" in out.stdout
    assert runs_of(runs / "grid")[victim.name]["status"] == "completed"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    newest = sweep_dirs(runs / "grid")[-1]
    assert len(list(newest.glob(".submitit/*/*_submitted.pkl"))) == 1  # one job went to SLURM, not three


@pytest.mark.cluster
def test_failing_run_is_reported_and_the_others_finish(slurm: None, tmp_path: Path, cache_dir: Path) -> None:
    # a hub model at a path that does not exist passes validation and fails when the job loads it;
    # threads=null: each job takes its torch threads from the launcher's cpus_per_task (2 here)
    runs = tmp_path / "runs"
    done = launch(runs, cache_dir, *SLURM, "group=mixed", "schedule=S", "model.source=tiny,hub",
                  "model.path=/nonexistent/base-model", "threads=null", "hydra.launcher.cpus_per_task=2")
    assert done.returncode == 0, done.stdout[-4000:]  # one run's failure does not fail the sweep
    found = runs_of(runs / "mixed")
    assert sorted(s["status"] for s in found.values()) == ["completed", "failed"]
    (failed,) = (s for s in found.values() if s["status"] == "failed")
    assert "/nonexistent/base-model" in failed["error"] and failed["job"]["executor"] == "slurm"
    assert {s["job"]["threads"] for s in found.values()} == {2}
    for rid, s in found.items():  # W&B's finish() is called on failure too, with exit code 1
        (wandb_file,) = offline_runs(runs / "mixed" / rid)
        exits = [r.exit.exit_code for r in records(wandb_file) if r.WhichOneof("record_type") == "exit"]
        assert exits == [1 if s["status"] == "failed" else 0]
    out = subprocess.run([sys.executable, "-m", "agent_safety.cli", "retry", str(sweep_dirs(runs / "mixed")[0]),
                          "--dry-run"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "2 runs (1 completed, 1 failed), 1 to relaunch" in out.stdout, out.stdout


def _wait(what: str, cond, limit: float = 300) -> None:  # noqa: ANN001
    end = time.time() + limit
    while not cond():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.25)


@pytest.mark.cluster
def test_preempted_run_resumes_to_the_same_run_and_metrics(slurm: None, tmp_path: Path, cache_dir: Path) -> None:
    """Preempted twice mid-stage: ``scontrol requeue`` (SIGTERM, then SIGKILL) in stage 1, and submitit's own
    interrupt (SIGTERM + USR2: checkpoint, requeue, exit) in stage 2. An uninterrupted twin runs beside it."""
    runs = tmp_path / "runs"
    runs.mkdir()
    # 12 steps of 4 pairs per stage; each run trains its own stages (shared, the twin's would be adopted)
    longer = ("eval.max_cases=8", "schedule=S_H", "trainer.max_pairs=48", "trainer.max_steps=12",
              "trainer.save_steps=3", "reuse_stages=false")

    def start(group: str) -> subprocess.Popen:
        log = (runs / f"{group}.log").open("w")
        return subprocess.Popen(_command(runs, cache_dir, (*SLURM, f"group={group}"), tiny=longer), cwd=ROOT,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT)

    twin, job = start("twin"), start("preempted")
    group = runs / "preempted"

    def status() -> dict:
        found = runs_of(group)
        return next(iter(found.values())) if found else {}

    def checkpoint(stage: int) -> bool:
        return bool(list(group.glob(f"*/stage_{stage}/trainer/checkpoint-*/trainer_state.json")))

    try:
        _wait("a stage-1 trainer checkpoint", lambda: checkpoint(1))
        slurm_id = status()["job"]["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", slurm_id], check=True, timeout=60)
        _wait("the requeued job", lambda: status().get("attempt") == 2)
        _wait("a stage-2 trainer checkpoint", lambda: checkpoint(2))
        for sig in ("TERM", "USR2"):  # what submitit's job._interrupt() sends on preemption
            subprocess.run(["scancel", f"--signal={sig}", slurm_id], check=True, timeout=60)
        _wait("the job resubmitted by submitit", lambda: status().get("attempt") == 3, limit=120)
        assert job.wait(timeout=420) == 0 and twin.wait(timeout=420) == 0
    finally:
        for p in (job, twin):
            if p.poll() is None:
                p.kill()
    (rid,) = runs_of(group)
    assert list(runs_of(runs / "twin")) == [rid]  # the run id ignores the group
    final = status()
    assert final["status"] == "completed" and final["attempt"] == 3 and final["job"]["slurm_job_id"] == slurm_id
    run_dir = group / rid
    assert_same_final(run_dir, runs / "twin" / rid)
    assert [r["stage"] for r in metrics(run_dir)] == [0, 1, 2]
    log = (run_dir / "run.log").read_text()  # what the jobs' stages logged, appended by every attempt
    assert "stage_1: resuming from" in log and "stage_2: resuming from" in log  # mid-stage, not from scratch
    assert "Requeued job" in log  # submitit's USR2 handler ran after our checkpoint
    # one W&B run, resumed by each attempt: the same id in all three offline files, the id kept in the run dir
    wandb_id = (run_dir / "wandb_id").read_text().strip()
    files = offline_runs(run_dir)
    assert len(files) == 3 and all(wandb_id in f.name for f in files)
    assert run_record(files[-1]).run_id == wandb_id
    assert not (run_dir / "stage_1" / "trainer").exists()  # checkpoints go once their stage is saved


# ------------------------------------------------------------------------------------------ no SLURM


@pytest.mark.slow
def test_submitit_local_and_local_run_the_same_sweep(tmp_path: Path, cache_dir: Path) -> None:
    runs = tmp_path / "runs"
    local = launch(runs, cache_dir, "hydra/launcher=local", "threads=1", "group=local", "schedule=S,H",
                   "logger=none")
    parallel = launch(runs, cache_dir, "hydra/launcher=submitit_local", "group=parallel", "schedule=S,H",
                      "logger=none", "reuse_stages=false")  # trained again, not adopted from the local runs
    assert local.returncode == 0, local.stdout[-4000:]
    assert parallel.returncode == 0, parallel.stdout[-4000:]
    a, b = runs_of(runs / "local"), runs_of(runs / "parallel")
    assert sorted(a) == sorted(b) and len(a) == 2
    for rid in a:
        assert a[rid]["status"] == b[rid]["status"] == "completed"
        assert b[rid]["job"]["executor"] == "local" and "executor" not in a[rid]["job"]
        assert b[rid]["job"]["threads"] == 1  # submitit_local's share: one thread per job on this machine
        assert_same_final(runs / "local" / rid, runs / "parallel" / rid)


@pytest.mark.slow
def test_api_key_never_reaches_run_files_or_wandb_files(tmp_path: Path, cache_dir: Path) -> None:
    key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4"  # 40 hex characters, like a W&B API key
    assert len(key) == 40
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {**_env(), "WANDB_API_KEY": key}
    done = subprocess.run(_command(runs, cache_dir, ("schedule=S", "trainer.max_steps=2", "logger.mode=offline",
                                                     "trainer.logging_steps=1", "group=keys", "threads=1")),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert key not in done.stdout + done.stderr
    files = [p for p in runs.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"status.json", "config.yaml", "multirun.yaml", "debug.log", "debug-internal.log"} <= names
    assert any(p.suffix == ".wandb" for p in files) and "requirements.txt" in names
    leaks = [p for p in files if key.encode() in p.read_bytes()]
    assert leaks == []
    (rid,) = runs_of(runs / "keys")
    (wandb_file,) = offline_runs(runs / "keys" / rid)
    run = run_record(wandb_file)
    assert run.run_group == "keys" and run.job_type == "S" and list(run.tags) == ["tiny", "safety", "beta=0.1",
                                                                                  "seed=0"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["schedule"]["name"] == "S" and config["trainer"]["max_steps"] == 2  # the resolved config
    logged = {item.key or "/".join(item.nested_key) for r in records(wandb_file)
              if r.WhichOneof("record_type") == "history" for item in r.history.item}
    assert {"eval/estimate/safety", "eval/estimate/helpfulness", "train/loss", "train/global_step"} <= logged
