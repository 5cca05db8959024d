"""Sweep plans: what a sweep would run, without running it (``launch.py -m +sweep=paper --dry-run``).

Each job prints its run id, whether it already completed, and a rough GPU-hour estimate from the pair
counts of its stages; a Hydra callback prints the totals at the end, counting a stage that several
schedules share (see ``reuse``) once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from agent_safety.records.io import atomic_write
from agent_safety.train.reuse import stage_key


def _data_key(cfg: DictConfig, root: Path) -> str:
    """Cheap key of the data files (names, sizes, mtimes): plans must not hash 200 MB per job."""
    base = root / "data" / "raw_data_by_eval" / cfg.data.judge
    stats = sorted((str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in base.rglob("*.jsonl"))
    rules = {k: dict(v) for k, v in cfg.objectives.items()}
    blob = json.dumps({"stats": stats, "rules": rules, "seed": cfg.seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def pair_counts(cfg: DictConfig) -> dict[str, int]:
    """Train-split pair count of each objective, cached by the data files' stats."""
    from agent_safety.data.benchmark import data_root
    from agent_safety.data.split import split_cases
    from agent_safety.data.toolemu import load_benchmark
    from agent_safety.pairs.rules import PairRule, build_pairs

    root = data_root(cfg.data, cfg.paths.cache_dir)
    path = Path(cfg.paths.cache_dir) / "plan" / f"{_data_key(cfg, root)}.json"
    if path.exists():
        return json.loads(path.read_text())
    bench = load_benchmark(root, cfg.data.judge, on_error="skip")
    train, _ = split_cases(bench.n_cases, cfg.seed)
    counts = {name: len(build_pairs(bench.trajectories, PairRule.from_config(obj), train))
              for name, obj in cfg.objectives.items()}
    atomic_write(path, json.dumps(counts))
    return counts


def stage_hours(cfg: DictConfig, counts: dict[str, int]) -> list[float]:
    """GPU-hours of each stage: its pairs (capped by ``trainer.max_pairs``) x epochs x the model's rate."""
    hours = []
    for name in cfg.schedule.stages:
        pairs = counts[name]
        if cfg.trainer.max_pairs:
            pairs = min(pairs, cfg.trainer.max_pairs)
        epochs = cfg.objectives[name].num_train_epochs or cfg.trainer.num_train_epochs
        hours.append(pairs / 1000 * epochs * cfg.model.gpu_hours_per_kpair)
    return hours


def plan_line(cfg: DictConfig) -> dict[str, Any]:
    """Print and return this job's plan entry; nothing is trained or written to the run dir."""
    from agent_safety.config.validate import validate
    from agent_safety.train.schedule import run_dir_for

    validate(cfg)
    rid, rd, config = run_dir_for(cfg)
    status = rd.status().get("status", "missing")
    keys = [stage_key(config, k) for k in range(1, len(cfg.schedule.stages) + 1)] if cfg.reuse_stages else []
    try:
        per_stage: list[float] | None = stage_hours(cfg, pair_counts(cfg))
    except (OSError, ValueError) as e:  # data not fetched yet: still plan the job
        per_stage = None
        print(f"  (no estimate for {rid}: {e})")
    hours = None if per_stage is None else sum(per_stage)
    shown = "?" if hours is None else f"{hours:.2f}"
    print(f"plan {rid}  {status:<9}  {shown:>7} GPU-h  {cfg.model.name} {cfg.data.name} {cfg.schedule.name} "
          f"beta={cfg.trainer.beta} seed={cfg.seed}  -> {rd.root}", flush=True)
    return {"plan": True, "run_id": rid, "status": status, "gpu_hours": hours, "run_dir": str(rd.root),
            "stages": [[k, h] for k, h in zip(keys, per_stage or [], strict=False)]}


class PlanSummary(Callback):
    """Totals of a planned sweep, printed once every job has been planned."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        value = getattr(job_return, "_return_value", None)
        if isinstance(value, dict) and value.get("plan"):
            self.entries.append(value)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.entries:
            print(plan_totals(self.entries), flush=True)


def plan_totals(entries: list[dict[str, Any]]) -> str:
    """Totals over the runs still to go; a stage two schedules share (S and S_H's first) counts once."""
    done = sum(e["status"] == "completed" for e in entries)
    todo = [e for e in entries if e["status"] != "completed"]
    hours, seen, shared = 0.0, set(), 0
    for e in todo:
        if not e.get("stages"):  # stage sharing off, or no estimate
            hours += e["gpu_hours"] or 0.0
            continue
        for k, h in e["stages"]:
            shared += k in seen
            hours += 0.0 if k in seen else h
            seen.add(k)
    note = f", {shared} stage{'s' * (shared != 1)} shared between schedules" if shared else ""
    return (f"plan: {len(entries)} runs, {done} completed, {len(todo)} to run, "
            f"~{hours:.1f} GPU-hours to go{note} (nothing was submitted)")


def plan_sweep(overrides: list[str], multirun: bool) -> int:
    """``launch.py ... --dry-run``: plan every job of the command line's sweep in this process.

    No launcher is involved (a cluster preset's launcher keys need not fit any other launcher) and no
    sweep dir is written: the grid is expanded as Hydra's basic sweeper does and each job composed.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from agent_safety.config.compose import compose_many
    from agent_safety.launch.retry import expand_grid

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o for o, p in zip(overrides, parsed, strict=True) if not p.is_sweep_override()]
    ((_, master),) = compose_many([fixed], hydra=True)
    if multirun or str(master.hydra.mode) == "RunMode.MULTIRUN":
        params = master.hydra.sweeper.get("params") or {}
        jobs = expand_grid([f"{k}={v}" for k, v in params.items()], overrides)
    else:
        jobs = [tuple(overrides)]
    entries = []
    for i, (job, cfg) in enumerate(compose_many(jobs)):
        print(f"#{i} : {' '.join(job)}", flush=True)
        entries.append(plan_line(cfg))
    print(plan_totals(entries), flush=True)
    return 0
