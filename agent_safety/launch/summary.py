"""The table a sweep ends with: each run's config, seed, status and stage scores, the counts, and the command
that aggregates it. Read from the run dirs, so it is the same whichever launcher ran the jobs."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job of the sweep recorded in ``sweep_dir``: its overrides, run id, status, stage records."""
    from agent_safety.launch.plan import compose_jobs
    from agent_safety.launch.retry import expand, load_sweep
    from agent_safety.records.identity import eval_id
    from agent_safety.records.rundir import RunDir
    from agent_safety.run.schedule import run_dir_for

    sweep = load_sweep(sweep_dir)
    extra = (f"paths.runs_dir={sweep.runs_dir}",) if sweep.runs_dir else ()
    rows = []
    for job, cfg in compose_jobs([(*job, *extra) for job in expand(sweep)]):
        rid, rd, config = run_dir_for(cfg)
        run = RunDir(rd.root if rd.root.is_absolute() else sweep.cwd / rd.root)
        status = run.status()
        rows.append({"overrides": job[:len(job) - len(extra)], "run_id": rid, "run_dir": str(run.root),
                     "seed": cfg.seed, "status": status.get("status", "missing"),
                     "error": status.get("error") or "", "records": run.eval(eval_id(config)).records()})
    return rows


def sweep_table(rows: Sequence[dict[str, Any]], runs_dir: Path | None) -> str:
    """The rows as a table (each stage as safety/helpfulness), then the counts and the aggregate command."""
    varying = _varying([r["overrides"] for r in rows])
    configs = [" ".join(o for o in r["overrides"] if o.partition("=")[0] in varying and not o.startswith("seed="))
               or "-" for r in rows]
    width = max([len("config"), *map(len, configs)])
    n_stages = max((len(r["records"]) for r in rows), default=0)
    lines = [f"{'run':<10}  {'config':<{width}}  seed  {'status':<9}  "
             + "  ".join(f"{f'stage {k} S/H':<11}" for k in range(n_stages))]
    for row, config in zip(rows, configs, strict=True):
        scores = "  ".join(f"{r['safety']:.3f}/{r['helpfulness']:.3f}" for r in row["records"])
        lines.append(f"{row['run_id']:<10}  {config:<{width}}  {row['seed']:>4}  {row['status']:<9}  {scores}")
        if row["error"]:
            lines.append(f"{'':<10}  {row['error'].splitlines()[0][:160]}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "failed", "preempted", "running",
                                                                 "missing")}
    shown = [f"{n} {s}" for s, n in counts.items() if n or s in ("completed", "failed")]
    lines.append(f"{len(rows)} run{'s' * (len(rows) != 1)}: " + ", ".join(shown))
    groups = sorted({str(Path(r["run_dir"]).parent) for r in rows})
    if groups:
        root = groups[0] if len(groups) == 1 else str(runs_dir or Path(groups[0]).parent)
        lines.append(f"aggregate: agent-safety aggregate {shlex.quote(root)} --out {shlex.quote(root + '/aggregate')}")
    return "\n".join(lines)


#: Keys that say where and how a run ran, not what it is: left out of the table's config column.
_PLUMBING = ("paths.", "hydra.", "hydra/", "threads", "logger", "device", "seed", "+sweep", "sweep")


def _varying(jobs: Sequence[Sequence[str]]) -> set[str]:
    """The keys whose value differs between jobs; for a one-run sweep, those that choose what it is."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for o in job:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    if len(jobs) == 1:
        return {k for k in values if not k.startswith(_PLUMBING)}
    return {k for k, v in values.items() if len(v) > 1}


class SweepSummary(Callback):
    """Prints :func:`sweep_table` once every job of a multirun has ended."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from agent_safety.console import say

        sweep_dir = Path(config.hydra.sweep.dir)
        if not (sweep_dir / "multirun.yaml").exists():
            return
        try:
            rows = sweep_rows(sweep_dir)
        except Exception as e:  # the table is a summary: a sweep that ran is not failed by it
            say(f"sweep: no summary table ({type(e).__name__}: {e}); agent-safety retry {sweep_dir} --dry-run "
                "lists its runs", err=True)
            return
        say(f"sweep {sweep_dir}:\n" + sweep_table(rows, Path(str(config.paths.runs_dir))))
