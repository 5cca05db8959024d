"""Stages shared between schedules: identity of a prefix, adoption by hard link, one trainer under a lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose, pinned, run_log, stage_records

from agent_safety.config.schema import to_container
from agent_safety.records.identity import run_id, stage_key
from agent_safety.run.schedule import run_schedule

QUICK = ["trainer.max_steps=3", "trainer.max_pairs=12", "eval.max_cases=6", "logger=none"]


def _config(*overrides: str) -> dict:
    return to_container(compose(list(overrides)))


def test_a_prefix_is_shared_only_by_schedules_that_start_the_same_way() -> None:
    s, s_h, h_s, h = (_config(f"schedule={x}") for x in ("S", "S_H", "H_S", "H"))
    assert stage_key(s, 1) == stage_key(s_h, 1)
    assert stage_key(h, 1) == stage_key(h_s, 1)
    assert stage_key(s, 1) != stage_key(h, 1)
    assert stage_key(s_h, 2) != stage_key(h_s, 2)
    custom = _config("schedule.stages=[safety,safety]", "schedule.name=S_S")
    assert stage_key(custom, 1) == stage_key(s, 1) and stage_key(custom, 2) != stage_key(s_h, 2)


@pytest.mark.parametrize("change", ["seed=1", "trainer.beta=0.05", "objectives.safety.min_margin=1.0",
                                    "trainer.max_pairs=12", "data.n_cases=64"])
def test_anything_that_changes_the_stage_changes_its_identity(change: str) -> None:
    assert stage_key(_config("schedule=S"), 1) != stage_key(_config("schedule=S", change), 1)


@pytest.mark.parametrize("change", ["group=other", "threads=1", "logger=none", "paths.runs_dir=/elsewhere",
                                    "objectives.helpfulness.min_margin=1.0", "reuse_stages=false",
                                    "eval.per_token=true"])
def test_what_the_stage_does_not_depend_on_leaves_it_shared(change: str) -> None:
    assert stage_key(_config("schedule=S"), 1) == stage_key(_config("schedule=S", change), 1)


def test_the_switch_leaves_run_ids_alone() -> None:
    assert run_id(_config("reuse_stages=false")) == run_id(_config())


@pytest.mark.slow
def test_a_second_schedule_adopts_the_trained_prefix_and_trains_the_rest(make_cfg, tmp_path: Path) -> None:
    s = run_schedule(make_cfg("schedule=S", *QUICK))
    s_h = run_schedule(make_cfg("schedule=S_H", *QUICK))
    first, second = s.records, s_h.records
    assert not first[1].get("trained_by")
    assert second[1]["trained_by"] == s.run_id and second[1]["run_id"] == s_h.run_id
    assert second[1]["schedule"] == "S_H" and second[1]["objectives"] == ["safety"]
    for k in ("safety", "helpfulness", "pref_acc_safety", "case_safety", "pairs_used", "train_loss"):
        assert second[1][k] == first[1][k], k
    assert not second[2].get("trained_by") and second[2]["pairs_used"] > 0
    src = s.run_dir / "stage_1" / "model" / "model.safetensors"
    dst = s_h.run_dir / "stage_1" / "model" / "model.safetensors"
    assert src.stat().st_ino == dst.stat().st_ino  # a hard link, no second copy on disk
    assert (s_h.run_dir / "stage_2" / "model" / "model.safetensors").exists()
    # the stage-2 model trained from the adopted one: a rerun without sharing gets the same numbers
    fresh = run_schedule(make_cfg("schedule=S_H", "reuse_stages=false", *QUICK, runs=tmp_path / "alone"))
    assert not fresh.records[1].get("trained_by")
    assert fresh.records[2]["safety"] == pytest.approx(second[2]["safety"], abs=1e-6)
    assert fresh.records[2]["train_loss"] == pytest.approx(second[2]["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_shared_prefix_whose_source_is_gone_is_trained_again(make_cfg) -> None:
    import shutil

    s = run_schedule(make_cfg("schedule=S", *QUICK))
    shutil.rmtree(s.run_dir / "stage_1" / "model")  # its merged model and its stacked adapter: nothing to adopt
    shutil.rmtree(s.run_dir / "stage_1" / "stacked")
    s_h = run_schedule(make_cfg("schedule=S_H", *QUICK))
    assert not s_h.records[1].get("trained_by")
    forced = run_schedule(make_cfg("schedule=S_H", "force=true", *QUICK))  # force never adopts
    assert not forced.records[1].get("trained_by")


@pytest.mark.slow
def test_concurrent_jobs_train_a_shared_stage_once(tmp_path: Path, cache_dir: Path) -> None:
    """Two processes start S and S_H together, as submitit_local does: one trains stage 1, the other waits."""
    runs = tmp_path / "runs"
    common = [f"paths.runs_dir={runs}", f"paths.cache_dir={cache_dir}", "threads=1", *QUICK]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *pinned([f"schedule={x}", *common])], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for x in ("S_H", "S")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = {}
    for status in runs.glob("single/*/status.json"):
        metrics = stage_records(status.parent)
        rows[metrics[-1]["schedule"]] = metrics
    trained = [x for x in ("S", "S_H") if not rows[x][1].get("trained_by")]
    assert len(trained) == 1, "exactly one job trains the shared stage"
    other = "S" if trained == ["S_H"] else "S_H"
    assert rows[other][1]["trained_by"] == rows[trained[0]][1]["run_id"]
    assert rows[other][1]["safety"] == rows[trained[0]][1]["safety"]
    trained = sum(run_log(s.parent).count("first training step") for s in runs.glob("single/*/status.json"))
    assert trained == 2  # S_H's stage 2, the shared stage 1
