"""``agent-safety retry <sweep dir>``: relaunch the runs of a Hydra sweep that failed or never ran.

A multirun leaves ``<sweep dir>/multirun.yaml`` (by default ``runs/<group>/.sweep/<timestamp>/``): its
overrides and the sweeper's params. Expanding them the way Hydra's basic sweeper does gives every job; each
job's config gives its run id and so its ``status.json``. Runs still running or queued (their process or
SLURM job is alive) are left alone. The rest of the failed or missing runs are relaunched with the
original launcher: exactly those runs when they form one sub-grid of the sweep (one run, or all values of
some keys); otherwise the whole sweep again, where completed runs stop at once without training.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from agent_safety.config.compose import PROJECT_ROOT, compose_many

LAUNCH = PROJECT_ROOT / "launch.py"
#: Values that can be joined with commas into one sweep override and parsed back unchanged.
_PLAIN_VALUE = re.compile(r"^[\w.\-/:+@]+$")


@dataclass(frozen=True)
class Sweep:
    """What a multirun recorded about itself."""

    dir: Path
    task: tuple[str, ...]
    """The command line's overrides (``hydra.overrides.task``)."""
    hydra: tuple[str, ...]
    """Overrides of Hydra's own config (launcher choice and settings)."""
    params: tuple[str, ...]
    """The sweeper's ``params`` (a sweep preset's grid) as overrides; the command line's come after."""
    cwd: Path
    runs_dir: Path | None
    """Where the runs live, read off the sweep dir's place (``<runs_dir>/<group>/.sweep/<ts>``)."""
    sweeper: str
    launcher: str


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]
    run_id: str
    run_dir: Path
    status: str
    """completed, failed, missing, preempted or running."""
    detail: str = ""
    alive: bool | None = None
    """For running/preempted runs: whether its process or SLURM job still exists (None: cannot tell)."""


def load_sweep(sweep_dir: Path) -> Sweep:
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not the folder of a Hydra multirun")
    hc = OmegaConf.load(path).hydra
    node = hc.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    assert isinstance(params, dict)
    runs_dir = sweep_dir.resolve().parents[2] if sweep_dir.resolve().parent.name == ".sweep" else None
    return Sweep(
        dir=sweep_dir, task=tuple(hc.overrides.task), hydra=tuple(hc.overrides.hydra),
        params=tuple(f"{k}={v}" for k, v in params.items()), cwd=Path(hc.runtime.cwd), runs_dir=runs_dir,
        sweeper=str(hc.runtime.choices.get("hydra/sweeper")), launcher=str(hc.runtime.choices.get("hydra/launcher")),
    )


def expand_grid(params: Sequence[str], overrides: Sequence[str]) -> list[tuple[str, ...]]:
    """Every job's overrides, as Hydra's basic sweeper builds them from its params and the command line's
    overrides (the grid, in its order; a key on the command line replaces the same key of the params)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    return [tuple(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]


def expand(sweep: Sweep) -> list[tuple[str, ...]]:
    return expand_grid(sweep.params, sweep.task)


def still_running(job: Mapping[str, Any]) -> bool | None:
    """Whether the process or SLURM job recorded in a status's ``job`` entry still exists; None: cannot tell."""
    slurm = job.get("slurm_job_id")
    if slurm:
        try:
            out = subprocess.run(["squeue", "-h", "-j", str(slurm), "-o", "%T"], capture_output=True, text=True,
                                 timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return False if "invalid job id" in out.stderr.lower() else None
        return bool(out.stdout.strip())
    if job.get("pid") and job.get("host") == socket.gethostname():
        try:
            os.kill(int(job["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return None


def job_statuses(sweep: Sweep, jobs: Sequence[tuple[str, ...]]) -> list[Job]:
    """Compose each job's config (as the launcher would) and read its run's status."""
    from agent_safety.records.rundir import RunDir
    from agent_safety.run.schedule import run_dir_for

    extra = [f"paths.runs_dir={sweep.runs_dir}"] if sweep.runs_dir else []
    out = []
    for overrides, cfg in compose_many([(*job, *extra) for job in jobs], sweep.hydra):
        rid, rd, _ = run_dir_for(cfg)
        root = rd.root if rd.root.is_absolute() else sweep.cwd / rd.root
        status = RunDir(root).status()
        state = status.get("status", "missing")
        detail = status.get("error") or status.get("note") or ""
        alive = still_running(status.get("job") or {}) if state in ("running", "preempted") else None
        out.append(Job(overrides[:len(overrides) - len(extra)], rid, root, state, str(detail), alive))
    return out


def to_relaunch(jobs: Sequence[Job], include_running: bool = False) -> list[Job]:
    """Failed and missing runs, and runs left running or preempted by a job that no longer exists."""
    def stale(j: Job) -> bool:
        return j.alive is False or (j.alive is None and include_running)

    return [j for j in jobs if j.status in ("failed", "missing")
            or (j.status in ("running", "preempted") and stale(j))]


def single_grid(jobs: Sequence[Sequence[str]]) -> list[str] | None:
    """The overrides of one Hydra sweep that launches exactly ``jobs``, or None when they are not one grid.

    Jobs come from one sweep, so they name the same keys in the same order; they form one grid when the
    product of each key's values is exactly the set of jobs.
    """
    if not jobs:
        return None
    split = [[o.split("=", 1) for o in job] for job in jobs]
    keys = [k for k, _ in split[0]]
    if any([k for k, _ in job] != keys for job in split):
        return None
    values = [list(dict.fromkeys(job[i][1] for job in split)) for i in range(len(keys))]
    if {tuple(v for _, v in job) for job in split} != set(itertools.product(*values)):
        return None
    out = []
    for i, (key, vals) in enumerate(zip(keys, values, strict=True)):
        if len(vals) == 1:
            out.append(jobs[0][i])
        elif all(_PLAIN_VALUE.match(v) for v in vals):
            out.append(f"{key}={','.join(vals)}")
        else:
            return None
    return out


def relaunch_command(sweep: Sweep, jobs: Sequence[Job], pending: Sequence[Job]) -> tuple[list[str], bool]:
    """(command line, whether it launches only ``pending``) for relaunching the sweep's pending runs."""
    grid = single_grid([j.overrides for j in pending]) if sweep.sweeper == "basic" else None
    exact = grid is not None or len(pending) == len(jobs)
    overrides = grid if grid is not None else list(sweep.task)
    if sweep.runs_dir and not any(o.startswith("paths.runs_dir=") for o in overrides):
        overrides.append(f"paths.runs_dir={sweep.runs_dir}")
    return [sys.executable, str(LAUNCH), "-m", *sweep.hydra, *overrides], exact


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``retry`` subcommand."""
    p = subparsers.add_parser(
        "retry", help="relaunch the failed or missing runs of a sweep",
        description="Read <sweep dir>/multirun.yaml, list the sweep's runs that failed or never ran, and "
                    "relaunch them with the sweep's own launcher and overrides. Completed runs are never "
                    "trained again; runs whose job is still alive are left alone.")
    p.add_argument("sweep_dir", type=Path, help="a multirun's folder, e.g. runs/orders/.sweep/2026-01-01_12-00-00")
    p.add_argument("--dry-run", action="store_true", help="list the runs and print the command; launch nothing")
    p.add_argument("--include-running", action="store_true",
                   help="also relaunch runs marked running/preempted whose job cannot be checked from here")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep_dir)
    jobs = job_statuses(sweep, expand(sweep))
    pending = to_relaunch(jobs, args.include_running)
    counts = {s: sum(j.status == s for j in jobs) for s in ("completed", "failed", "missing", "preempted", "running")}
    print(f"retry {sweep.dir}: {len(jobs)} runs (" + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
          + f"), {len(pending)} to relaunch", flush=True)
    for j in jobs:
        if j.status == "completed":
            continue
        verdict = "relaunch" if j in pending else ("still alive" if j.alive else "left alone (--include-running)")
        print(f"  {j.status:<9} {j.run_id}  {' '.join(j.overrides)}  [{verdict}]"
              + (f"\n            {j.detail.splitlines()[0][:200]}" if j.detail else ""), flush=True)
    if not pending:
        print("nothing to relaunch", flush=True)
        return 0
    cmd, exact = relaunch_command(sweep, jobs, pending)
    how = "exactly these runs" if exact else "the whole sweep (not one grid); completed runs stop at once"
    print(f"relaunch ({how}, launcher {sweep.launcher}, in {sweep.cwd}):\n  {shlex.join(cmd)}", flush=True)
    if args.dry_run:
        return 0
    cwd = sweep.cwd if sweep.cwd.is_dir() else Path.cwd()
    return subprocess.run(cmd, cwd=cwd, check=False).returncode
