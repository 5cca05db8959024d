"""Sweep plans: what a sweep would run, without running it (``launch.py -m +sweep=paper --dry-run``).

Each job prints its run id, whether it already completed, and a rough GPU-hour estimate from the pair
counts of its stages; a Hydra callback prints the totals at the end, counting a stage that several
schedules share (see ``reuse``) once.

A sweep's jobs differ in a few group choices and plain values, so ``plan_sweep`` composes each distinct
set of group choices once and applies the values as Hydra would (``compose_jobs``), and looks up each data
set's pair counts once (``Estimates``): the 180 runs of ``+sweep=paper`` plan in seconds, and data that is
not fetched yet is reported once, not once per job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from agent_safety.config.compose import compose_many, conf_dir
from agent_safety.config.describe import evaluation
from agent_safety.config.schema import register_configs
from agent_safety.config.validate import validate
from agent_safety.data.fetch import FetchError
from agent_safety.data.split import split_cases
from agent_safety.data.toolemu import load_benchmark
from agent_safety.launch.retry import expand_grid
from agent_safety.pairs.rules import PairRule, build_pairs
from agent_safety.records.identity import stage_key
from agent_safety.store.hashing import content_hash
from agent_safety.store.io import atomic_write


def _data_key(cfg: DictConfig, root: Path) -> str:
    """Cheap key of the data files (names, sizes, mtimes): plans must not hash 200 MB per job."""
    base = root / "data" / "raw_data_by_eval" / cfg.data.judge
    stats = sorted((str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in base.rglob("*.jsonl"))
    rules = {k: dict(v) for k, v in cfg.objectives.items()}
    return content_hash({"stats": stats, "rules": rules, "seed": cfg.seed}, 20)


def pair_counts(cfg: DictConfig, root: Path | None = None) -> dict[str, int]:
    """Train-split pair count of each objective, cached by the data files' stats."""
    from agent_safety.data.benchmark import data_root

    root = root if root is not None else data_root(cfg.data, cfg.paths.cache_dir)
    path = Path(cfg.paths.cache_dir) / "plan" / f"{_data_key(cfg, root)}.json"
    if path.exists():
        return json.loads(path.read_text())
    bench = load_benchmark(root, cfg.data.judge, on_error="skip")
    train, _ = split_cases(bench.n_cases, cfg.seed)
    counts = {name: len(build_pairs(bench.trajectories, PairRule.from_config(obj), train))
              for name, obj in cfg.objectives.items()}
    atomic_write(path, json.dumps(counts))
    return counts


def _canon(node: Any) -> str:
    return json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True, default=str)


class Estimates:
    """Pair counts of one plan's jobs, worked out once per data set rather than once per job.

    A sweep's 180 jobs share a couple of data sets: finding (or fetching) a data root, statting its files
    and reading the counts is done once per distinct input, and a failure (the study's data not fetched)
    is remembered, so it is tried once and reported once (``report``) instead of once per job.
    """

    def __init__(self) -> None:
        self._roots: dict[str, Path | Exception] = {}
        self._counts: dict[str, dict[str, int] | Exception] = {}
        self.failed: dict[str, list[str]] = {}
        """Reason -> the run ids that got no estimate for it."""

    @staticmethod
    def _root_key(cfg: DictConfig) -> str:
        """What ``data_root`` depends on: a ToolEmu root without ``data.root`` is fetch's cache, whatever the judge."""
        if cfg.data.source == "toolemu":
            return json.dumps(["toolemu", cfg.data.root])
        return json.dumps([_canon(cfg.data), str(cfg.paths.cache_dir)])

    def _root(self, cfg: DictConfig) -> Path:
        from agent_safety.data.benchmark import data_root

        key = self._root_key(cfg)
        if key not in self._roots:
            try:
                self._roots[key] = data_root(cfg.data, cfg.paths.cache_dir)
            except (OSError, ValueError) as e:
                self._roots[key] = e
        return _value(self._roots[key])

    def counts(self, cfg: DictConfig) -> dict[str, int]:
        """``pair_counts(cfg)`` or the exception it raised, once per root, judge, objectives and seed (all it reads)."""
        root = self._root(cfg)
        key = json.dumps([str(root), cfg.data.judge, _canon(cfg.objectives), cfg.seed, str(cfg.paths.cache_dir)])
        if key not in self._counts:
            try:
                self._counts[key] = pair_counts(cfg, root)
            except (OSError, ValueError) as e:
                self._counts[key] = e
        return _value(self._counts[key])

    def report(self) -> str | None:
        """One line per distinct reason some runs got no estimate; None when every run got one."""
        lines = [f"plan: no GPU-hour estimate for {len(rids)} run{'s' * (len(rids) != 1)}: {reason}"
                 for reason, rids in self.failed.items()]
        return "\n".join(lines) or None

    def no_estimate(self, rid: str, error: Exception) -> None:
        """Remember why ``rid`` got no estimate, to say it once for all the runs it concerns."""
        reason = str(error)
        if isinstance(error, FetchError):  # why the fetch failed (no network, a URL) is fetch's to say
            reason = ("the study's data is not here yet: `agent-safety data fetch` once (`--archive PATH` offline), "
                      "or AGENT_SAFETY_TOOLEMU_ROOT=<checkout>")
        self.failed.setdefault(reason, []).append(rid)


def _value(value: Any) -> Any:
    if isinstance(value, Exception):
        raise value
    return value


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


def _estimate(cfg: DictConfig, rid: str, estimates: Estimates | None) -> list[float] | None:
    """Per-stage GPU-hours, or None without data: said here for one job, by ``estimates.report`` for a sweep."""
    try:
        return stage_hours(cfg, estimates.counts(cfg) if estimates else pair_counts(cfg))
    except (OSError, ValueError) as e:  # data not fetched yet: still plan the job
        if estimates is None:
            print(f"  (no estimate for {rid}: {e})")
        else:
            estimates.no_estimate(rid, e)
        return None


def plan_line(cfg: DictConfig, estimates: Estimates | None = None) -> dict[str, Any]:
    """Print and return this job's plan entry; nothing is trained or written to the run dir."""
    from agent_safety.run.schedule import run_dir_for

    validate(cfg)
    rid, rd, config = run_dir_for(cfg)
    status = rd.status().get("status", "missing")
    keys = [stage_key(config, k) for k in range(1, len(cfg.schedule.stages) + 1)] if cfg.reuse_stages else []
    per_stage = _estimate(cfg, rid, estimates)
    hours = None if per_stage is None else sum(per_stage)
    shown = "?" if hours is None else f"{hours:.2f}"
    print(f"plan {rid}  {status:<9}  {shown:>7} GPU-h  {cfg.model.name} {cfg.data.name} {cfg.schedule.name} "
          f"beta={cfg.trainer.beta} seed={cfg.seed}  -> {rd.root}", flush=True)
    return {"plan": True, "run_id": rid, "status": status, "gpu_hours": hours, "run_dir": str(rd.root),
            "stages": [[k, h] for k, h in zip(keys, per_stage or [], strict=False)], "evaluation": evaluation(cfg)}


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
    unknown = sum(e["gpu_hours"] is None for e in todo)
    for e in todo:
        if not e.get("stages"):  # stage sharing off, or no estimate
            hours += e["gpu_hours"] or 0.0
            continue
        for k, h in e["stages"]:
            shared += k in seen
            hours += 0.0 if k in seen else h
            seen.add(k)
    note = f", {shared} stage{'s' * (shared != 1)} shared between schedules" if shared else ""
    if unknown == len(todo) and todo:
        to_go = "GPU-hours to go unknown (no estimate: see above)"
    else:
        to_go = f"~{hours:.1f} GPU-hours to go"
        if unknown:
            to_go += f", {unknown} run{'s' * (unknown != 1)} unknown (see above)"
    evaluations: dict[str, int] = {}
    for e in entries:
        evaluations[e.get("evaluation") or "?"] = evaluations.get(e.get("evaluation") or "?", 0) + 1
    scored = "".join(f"\nplan: scored by {name}" + (f" ({n} runs)" if len(evaluations) > 1 else "")
                     for name, n in evaluations.items())
    return (f"plan: {len(entries)} runs, {done} completed, {len(todo)} to run, "
            f"{to_go}{note} (nothing was submitted){scored}")


def _value_override(override: Any, repo: Any) -> Any:
    """The override if Hydra applies it as a value after composing (``defaults_list.Overrides``' rule: a dict
    value, or a key that names no config group), else None: it chooses a group, so it shapes the defaults."""
    if override.is_sweep_override() or override.package is not None:
        return None
    if isinstance(override.value(), dict) or not repo.group_exists(override.key_or_group):
        return override
    return None


def compose_jobs(jobs: Sequence[Sequence[str]]) -> Iterator[tuple[tuple[str, ...], DictConfig]]:
    """(overrides, run config) of each job, the same config ``compose_many`` gives, in a fraction of the time.

    Hydra composes a config in two steps: the defaults list (from the group choices: ``model=phi-4``,
    ``+sweep=paper``) is merged into one config, then the plain value overrides (``seed=1``,
    ``trainer.beta=0.05``) are applied to it in command-line order (``ConfigLoaderImpl._apply_overrides_to_config``).
    The first step is most of the cost and a sweep repeats it with the same choices, so it is done once per
    distinct set of group overrides here and the second step applied to a copy, with Hydra's own function
    and its own test of which overrides are values. Overrides of ``hydra.*`` only touch the Hydra node,
    which a run config does not have. tests/test_plan.py checks the result against ``compose_many``.
    """
    import copy

    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            repo = GlobalHydra.instance().config_loader().repository  # type: ignore[attr-defined]
            parser, bases, values = OverridesParser.create(), {}, {}
            for job in jobs:
                for line in job:  # each distinct override is parsed and classified once per sweep
                    if line not in values:
                        values[line] = _value_override(parser.parse_override(line), repo)
                early = tuple(line for line in job if values[line] is None)
                if early not in bases:
                    bases[early] = compose(config_name="config", overrides=list(early))
                cfg = copy.deepcopy(bases[early])
                late = [o for line in job if (o := values[line]) is not None and not o.is_hydra_override()]
                ConfigLoaderImpl._apply_overrides_to_config(late, cfg)
                yield tuple(job), cfg
    finally:
        GlobalHydra.instance().clear()


def plan_sweep(overrides: list[str], multirun: bool) -> int:
    """``launch.py ... --dry-run``: plan every job of the command line's sweep in this process.

    No launcher is involved (a cluster preset's launcher keys need not fit any other launcher) and no
    sweep dir is written: the grid is expanded as Hydra's basic sweeper does and each job composed.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o for o, p in zip(overrides, parsed, strict=True) if not p.is_sweep_override()]
    ((_, master),) = compose_many([fixed], hydra=True)
    if multirun or str(master.hydra.mode) == "RunMode.MULTIRUN":
        params = master.hydra.sweeper.get("params") or {}
        jobs = expand_grid([f"{k}={v}" for k, v in params.items()], overrides)
    else:
        jobs = [tuple(overrides)]
    entries, estimates = [], Estimates()
    for i, (job, cfg) in enumerate(compose_jobs(jobs)):
        print(f"#{i} : {' '.join(job)}", flush=True)
        entries.append(plan_line(cfg, estimates))
    missing = estimates.report()
    if missing:
        print(missing, flush=True)
    print(plan_totals(entries), flush=True)
    return 0
