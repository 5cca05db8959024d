"""Nothing lost, nothing silent: faults and bad inputs met by real launches, each a clear error or a safe
recovery (docs/reliability.md). Launches run in subprocesses where a second process or a kill is the point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, pinned, stage_records

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
    assert sum(out.count("first training step") for out in outs) == 1, outs  # the stage trained once
    assert sum("already completed" in out for out in outs) == 1, outs
    (run_dir,) = [p.parent for p in runs.glob("single/*/status.json")]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["attempt"] == 1
    assert [r["stage"] for r in stage_records(run_dir)] == [0, 1]


@pytest.mark.slow
def test_evaluating_a_run_with_a_stage_model_missing_names_it_and_trains_nothing(make_cfg, capsys) -> None:
    from agent_safety.cli import main
    from agent_safety.train.schedule import run_schedule

    cfg = make_cfg("schedule=S_H", *QUICK)
    run = run_schedule(cfg)
    missing = run.run_dir / "stage_2" / "model"
    shutil.rmtree(missing)
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
