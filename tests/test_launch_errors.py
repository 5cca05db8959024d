"""What ``launch.py`` prints when the cluster refuses a sweep: one line with sbatch's reason and the keys to
change, not submitit's traceback; every other error still reads as Hydra prints it. No SLURM needed: sbatch
is a fake on PATH, or its error is built here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, pinned

REFUSED = "sbatch: error: Batch job submission failed: Requested node configuration is not available"


def _submission_file(tmp_path: Path) -> Path:
    path = tmp_path / ".submission_file_0.sh"
    path.write_text("#!/bin/bash\n\n# Parameters\n#SBATCH --array=0-1%2\n#SBATCH --cpus-per-task=8\n"
                    "#SBATCH --gpus-per-node=1\n#SBATCH --mem=64GB\n#SBATCH --nodes=1\n\nsrun python -u x\n")
    return path


def test_sbatch_refusal_is_one_line_with_the_reason_the_request_and_the_keys(tmp_path: Path) -> None:
    from submitit.core.utils import FailedJobError

    from agent_safety.launch.cluster import submission_error

    sbatch = subprocess.CalledProcessError(1, ["sbatch", str(_submission_file(tmp_path))], output="", stderr=REFUSED)
    try:
        raise FailedJobError(REFUSED) from sbatch
    except FailedJobError as e:
        line = submission_error(RuntimeError("wrapped"))  # not a submission error
        assert line is None
        line = submission_error(e)
    assert line == (
        "launch.py: error: sbatch refused the jobs (Batch job submission failed: Requested node configuration is not "
        "available); the jobs asked for hydra.launcher.partition=null gpus_per_node=1 cpus_per_task=8 mem_gb=64 "
        "constraint=null. Fit the request to the cluster with +cluster=NAME (a preset in conf/cluster/) or "
        "hydra.launcher.partition=..., hydra.launcher.gpus_per_node=... (null on a CPU-only partition), "
        "hydra.launcher.cpus_per_task=..., hydra.launcher.mem_gb=...")


def test_only_sbatch_failures_count_as_refusals(tmp_path: Path) -> None:
    from submitit.core.utils import FailedJobError

    from agent_safety.launch.cluster import submission_error

    # a job that ran and failed is the job's error, not the cluster's
    assert submission_error(FailedJobError("Job (task=0) failed during processing with trace: ...")) is None
    assert submission_error(subprocess.CalledProcessError(1, ["sacct", "-j", "1"], stderr="boom")) is None
    # sbatch gone before its file could be read, and silent: still one line, with its status
    gone = subprocess.CalledProcessError(2, ["/usr/bin/sbatch", str(tmp_path / "missing.sh")], stderr=b"")
    line = submission_error(gone)
    assert line is not None and "\n" not in line
    assert "(sbatch exited with status 2 and said nothing)" in line and "+cluster=NAME" in line


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    """PATH with an sbatch that refuses every job (and an srun, so submitit takes this for a SLURM node)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho '{REFUSED}' >&2\nexit 1\n")
    for name in ("srun", "sacct", "squeue", "scancel"):  # any other call would be a bug: make it loud
        (bin_dir / name).write_text(f"#!/bin/sh\necho 'unexpected {name}' >&2\nexit 3\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "AGENT_SAFETY_RUNS": str(tmp_path / "runs"), "AGENT_SAFETY_CACHE": str(tmp_path / "c")}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _launch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *pinned(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_sweep_sbatch_refuses_ends_in_one_line_and_status_2(tmp_path: Path) -> None:
    done = _launch(_fake_slurm(tmp_path), "-m", "hydra/launcher=slurm", "seed=0,1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert lines[:-1] == [REFUSED]  # submitit echoes sbatch's own stderr; then ours
    assert lines[-1].startswith("launch.py: error: sbatch refused the jobs (Batch job submission failed: Requested "
                                "node configuration is not available); the jobs asked for hydra.launcher.partition=null"
                                " gpus_per_node=1 cpus_per_task=8 mem_gb=64")
    assert all(key in lines[-1] for key in ("+cluster=", "hydra.launcher.gpus_per_node=", "hydra.launcher.partition="))


def test_other_errors_read_as_hydra_prints_them(tmp_path: Path) -> None:
    env = _fake_slurm(tmp_path)
    done = _launch(env, "-m", "hydra/launcher=slurm", "+cluster=example", "hydra.launcher.bogus=1", "seed=0,1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Could not override 'hydra.launcher.bogus'.\n")
    assert done.stderr.endswith("\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n")
    done = _launch({**env, "HYDRA_FULL_ERROR": "1"}, "-m", "hydra/launcher=slurm", "seed=0,1")
    assert done.returncode == 1 and "submitit.core.utils.FailedJobError" in done.stderr  # asked for the full trace


def test_a_job_error_keeps_hydras_trimmed_traceback(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from hydra._internal.utils import run_and_report

    from agent_safety.launch.cluster import run_reporting_submission_errors

    def task() -> None:
        raise ValueError("bad value in the task")

    def run_job() -> None:  # Hydra trims the traceback to the frames below its run_job
        task()

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as plain:
        run_and_report(run_job)
    hydra_says = capsys.readouterr().err
    with pytest.raises(SystemExit) as ours:
        run_reporting_submission_errors(lambda: run_and_report(run_job))
    assert plain.value.code == ours.value.code == 1
    assert capsys.readouterr().err == hydra_says and "bad value in the task" in hydra_says
    assert "HYDRA_FULL_ERROR" not in os.environ
