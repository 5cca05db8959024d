"""Plan mode (``--dry-run``): every job of a sweep planned in the launching process, nothing submitted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, pinned


def _plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_SAFETY_RUNS": str(tmp_path / "runs"), "AGENT_SAFETY_CACHE": str(tmp_path / "c")}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *pinned(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


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
    unknown = {"status": "missing", "gpu_hours": None, "stages": []}  # no data: said, never counted as 0
    assert "~8.0 GPU-hours to go, 1 run unknown (see above), 1 stage shared" in plan_totals([s, s_h, unshared,
                                                                                            unknown])


def _paper_jobs(tmp_path: Path, *extra: str) -> list[tuple[str, ...]]:
    """The 180 jobs of ``+sweep=paper``, expanded as plan mode and Hydra's basic sweeper do."""
    from agent_safety.launch.retry import expand_grid

    params = ["model=llama3.1-8b,qwen2.5-7b,phi-4", "schedule=S,H,S_H,H_S,SH", "trainer.beta=0.05,0.1",
              "data=toolemu_gpt5m,toolemu_q32", "seed=0,1,2"]
    return expand_grid(params, ["+sweep=paper", f"paths.runs_dir={tmp_path / 'runs'}",
                                f"paths.cache_dir={tmp_path / 'c'}", *extra])


def _same_configs(jobs: list[tuple[str, ...]]) -> list[tuple[object, object]]:
    """(full composition, plan mode's composition) of each job, asserted identical: values, interpolations, flags."""
    from omegaconf import OmegaConf

    from agent_safety.config.compose import compose_many
    from agent_safety.launch.plan import compose_jobs

    full, fast = list(compose_many(jobs)), list(compose_jobs(jobs))
    assert [job for job, _ in full] == [job for job, _ in fast] == [tuple(j) for j in jobs]
    for (job, a), (_, b) in zip(full, fast, strict=True):
        assert OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b), job
        assert OmegaConf.to_container(a, resolve=True) == OmegaConf.to_container(b, resolve=True), job
        assert OmegaConf.is_struct(a) == OmegaConf.is_struct(b) and OmegaConf.is_readonly(a) == OmegaConf.is_readonly(b)
    return [(a, b) for (_, a), (_, b) in zip(full, fast, strict=True)]


def test_plan_composes_the_paper_sweep_exactly_as_hydra_does_job_by_job(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan mode composes once per set of group choices and applies the values after: same configs, same
    run ids, same totals as composing each of the 180 jobs in full."""
    import contextlib
    import io

    from agent_safety.launch.plan import Estimates, plan_line, plan_totals

    monkeypatch.setenv("AGENT_SAFETY_TOOLEMU_ROOT", str(tmp_path / "no-data"))  # no fetch; every job: no estimate
    pairs = _same_configs(_paper_jobs(tmp_path))
    assert len(pairs) == 180
    with contextlib.redirect_stdout(io.StringIO()):
        full = [plan_line(a, Estimates()) for a, _ in pairs]
        fast = [plan_line(b, Estimates()) for _, b in pairs]
    assert [e["run_id"] for e in full] == [e["run_id"] for e in fast] and len({e["run_id"] for e in fast}) == 180
    assert plan_totals(full) == plan_totals(fast)
    assert plan_totals(fast).startswith(
        "plan: 180 runs, 0 completed, 180 to run, GPU-hours to go unknown (no estimate: see above)")


def test_plan_composition_applies_hydra_and_dict_overrides_as_hydra_does(tmp_path: Path) -> None:
    """Launcher choice, a cluster preset (appended group), ``hydra.*`` keys and a dict value, in any order."""
    jobs = [(*job, "trainer.lora={r:8,alpha:16}", "hydra.launcher.partition=cpu")
            for job in _paper_jobs(tmp_path, "hydra/launcher=slurm", "+cluster=example", "trainer.beta=0.2")[:12]]
    assert len(_same_configs(jobs)) == 12


def test_a_missing_dataset_is_tried_and_reported_once_for_a_whole_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Without the study's data, a plan of 8 toolemu jobs tries one download and says so in one line, with the fix."""
    from agent_safety.data import fetch as fetch_mod
    from agent_safety.launch.plan import plan_sweep

    url = "http://127.0.0.1:9/archive.tar.gz"  # a closed port: fails at once, no network
    calls: list[str] = []
    download = fetch_mod.download

    def counted(u: str, dest: Path, progress: bool = True) -> None:
        calls.append(u)
        download(u, dest, progress)

    monkeypatch.setattr(fetch_mod, "DEFAULT_URL", url)
    monkeypatch.setattr(fetch_mod, "download", counted)
    monkeypatch.setenv("AGENT_SAFETY_DATA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("AGENT_SAFETY_TOOLEMU_ROOT", raising=False)
    overrides = ["data=toolemu_gpt5m,toolemu_q32", "schedule=S,H", "seed=0,1", f"paths.runs_dir={tmp_path / 'runs'}",
                 f"paths.cache_dir={tmp_path / 'c'}"]
    assert plan_sweep(pinned(overrides), multirun=True) == 0
    out = capsys.readouterr().out
    assert calls == [url]
    assert out.count("estimate for") == 1 and url not in out  # the fix in one line, not fetch's story
    (line,) = [line for line in out.splitlines() if "estimate for" in line]
    assert line.startswith("plan: no GPU-hour estimate for 8 runs: the study's data is not here yet")
    assert "`agent-safety data fetch`" in line and "AGENT_SAFETY_TOOLEMU_ROOT" in line
    totals, scored = out.splitlines()[-2:]
    assert totals == ("plan: 8 runs, 0 completed, 8 to run, GPU-hours to go unknown (no estimate: see above) "
                      "(nothing was submitted)")  # unknown, never ~0.0
    assert scored.startswith("plan: scored by estimate (the offline proxy") and "data=toolemu_* presets" in scored
    assert sum(line.startswith("plan ") for line in out.splitlines()) == 8
