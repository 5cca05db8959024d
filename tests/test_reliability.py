"""Nothing lost, nothing silent: faults and bad inputs met by real launches, each a clear error or a safe
recovery (docs/reliability.md). Launches run in subprocesses where a second process or a kill is the point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, pinned, run_log, stage_records

QUICK = ["trainer.max_steps=3", "trainer.max_pairs=12", "eval.max_cases=6", "logger=none", "threads=1"]


def _launch_cmd(runs: Path, cache: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"),
            *pinned([*args, f"paths.runs_dir={runs}", f"paths.cache_dir={cache}", *QUICK])]


def _launch(runs: Path, cache: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_launch_cmd(runs, cache, *args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_two_launches_of_the_same_config_train_it_once(tmp_path: Path, cache_dir: Path) -> None:
    """Started together (one plain, one ``-m``): one trains, the other waits and then reports it completed,
    leaving the completed run dir as it was."""
    runs = tmp_path / "runs"
    procs = [subprocess.Popen(_launch_cmd(runs, cache_dir, *flag, "schedule=S"), cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for flag in ([], ["-m"])]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("already completed" in out for out in outs) == 1, outs
    (run_dir,) = [p.parent for p in runs.glob("single/*/status.json")]
    assert run_log(run_dir).count("first training step") == 1  # the stage trained once
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["attempt"] == 1
    assert [r["stage"] for r in stage_records(run_dir)] == [0, 1]


@pytest.mark.slow
def test_evaluating_a_run_with_a_stage_model_missing_names_it_and_trains_nothing(make_cfg, capsys) -> None:
    from agent_safety.cli import main
    from agent_safety.run.schedule import run_schedule

    cfg = make_cfg("schedule=S_H", *QUICK)
    run = run_schedule(cfg)
    missing = run.run_dir / "stage_2" / "model"
    shutil.rmtree(missing)
    shutil.rmtree(run.run_dir / "stage_2" / "stacked")  # without either, the stage's model is gone
    stages_before = (run.run_dir / "stages.jsonl").read_text()
    capsys.readouterr()
    code = main(["evaluate", str(run.run_dir), "eval=estimate", "eval.per_token=true",
                 f"paths.cache_dir={cfg.paths.cache_dir}", "logger=none", "threads=1"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(missing) in err and "evaluation never trains" in err and "force=true" in err
    assert "train_loss" not in out and not missing.exists()
    assert (run.run_dir / "stages.jsonl").read_text() == stages_before
    status = json.loads((run.run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["attempt"] == 1  # the run stands as it was


#: launch.py, killed with SIGKILL once the merged model of a stage is saved into its temporary folder and
#: before that folder is renamed into place: a job killed in the middle of the merged-model write.
KILLED_WHILE_WRITING_THE_MODEL = """
import os, runpy, signal, sys
import agent_safety.train.stage as stage
real = stage.replace_dir
def dying(target, save):
    if target.name != "model":
        return real(target, save)
    def save_then_die(folder):
        save(folder)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(target, save_then_die)
stage.replace_dir = dying
sys.argv[0] = {launch!r}
runpy.run_path({launch!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_a_kill_during_the_merged_model_write_resumes_to_the_same_record(tmp_path: Path, cache_dir: Path) -> None:
    runs, twin = tmp_path / "runs", tmp_path / "twin"
    script = KILLED_WHILE_WRITING_THE_MODEL.format(launch=str(ROOT / "launch.py"))
    killed = subprocess.run([sys.executable, "-c", script, *_launch_cmd(runs, cache_dir, "schedule=S")[2:]],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run_dir,) = [p.parent for p in runs.glob("single/*/status.json")]
    assert list((run_dir / "stage_1").glob(".model-*"))  # the kill left a half-written folder
    resumed = _launch(runs, cache_dir, "schedule=S")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    alone = _launch(twin, cache_dir, "schedule=S")
    assert alone.returncode == 0, alone.stderr[-3000:]
    (twin_dir,) = [p.parent for p in twin.glob("single/*/status.json")]
    lines = [json.loads(line) for line in (run_dir / "stages.jsonl").read_text().splitlines()]
    twin_lines = [json.loads(line) for line in (twin_dir / "stages.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["train_loss"] == pytest.approx(twin_lines[0]["train_loss"], rel=1e-5)
    assert lines[0]["train_loss"] > 0
    assert [r["stage"] for r in stage_records(run_dir)] == [0, 1]
    assert sorted(p.name for p in (run_dir / "stage_1").iterdir()) == ["adapter", "model", "stacked"]  # no leftovers


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr.strip().splitlines()[-1]


def test_a_runs_or_cache_dir_that_cannot_be_written_is_one_line(tmp_path: Path, cache_dir: Path) -> None:
    """A file where the folder should be (what a read-only mount is to a job; permission bits do not stop root)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    line = _one_line_error(_launch(blocker / "runs", cache_dir, "schedule=S"))  # Hydra's .launch dir in it
    assert line.startswith(f"launch.py: error: cannot write {blocker / 'runs'}") and "paths.runs_dir" in line
    line = _one_line_error(_launch(tmp_path / "runs", blocker / "cache", "schedule=S"))
    assert line == f"error: paths.cache_dir: cannot write {blocker / 'cache'}: Not a directory"
    assert not list((tmp_path / "runs").glob("single/*/status.json"))  # stopped before any work


def test_a_dry_run_with_a_bad_value_is_one_line(tmp_path: Path, cache_dir: Path) -> None:
    line = _one_line_error(_launch(tmp_path / "runs", cache_dir, "trainer.beta=0", "--dry-run"))
    assert line == "launch.py: error: trainer.beta must be > 0, got 0.0"


def test_evaluating_a_path_that_does_not_exist_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from agent_safety.cli import main

    missing = tmp_path / "runs" / "single" / "no-such-run"
    code = main(["evaluate", str(missing), f"paths.runs_dir={tmp_path / 'runs'}", "eval=estimate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"agent-safety evaluate: error: {missing}: no such run dir or model folder "
                                 "(and not a hub id)"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_corrupt_status_names_its_file_and_a_relaunch_recovers_the_run(make_cfg, tmp_path: Path,
                                                                         cache_dir: Path, capsys) -> None:
    from agent_safety.cli import main
    from agent_safety.run.schedule import run_schedule

    runs = tmp_path / "runs"
    run = run_schedule(make_cfg("schedule=S", *QUICK, runs=runs))
    status = run.run_dir / "status.json"
    status.write_text(status.read_text()[:25])  # cut short, as a disk that filled up would leave it
    records = (next(run.run_dir.glob("eval/*/metrics.jsonl"))).read_text()
    capsys.readouterr()
    code = main(["evaluate", str(run.run_dir), "eval=estimate", "eval.per_token=true",
                 f"paths.cache_dir={cache_dir}", "logger=none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"agent-safety evaluate: error: {status}: unreadable")
    plan = _launch(runs, cache_dir, "schedule=S", "plan=true")
    assert plan.returncode == 0 and "Traceback" not in plan.stderr and f"{status}: unreadable" in plan.stderr
    trained = run_log(run.run_dir).count("first training step")
    relaunch = _launch(runs, cache_dir, "schedule=S")  # the documented recovery: launch it again
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert f"{status}: unreadable" in relaunch.stderr + relaunch.stdout
    assert run_log(run.run_dir).count("first training step") == trained  # nothing trained again
    assert json.loads(status.read_text())["status"] == "completed"
    assert next(run.run_dir.glob("eval/*/metrics.jsonl")).read_text() == records
