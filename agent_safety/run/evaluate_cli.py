"""``agent-safety evaluate TARGET [overrides]``: score a completed run's stages, or any checkpoint, without training.

TARGET is a run dir (``runs/<group>/<run_id>``): its stages are scored with the evaluation setting the
overrides compose (``eval=generative eval/judge=gpt5m ...``) into ``eval/<eval_id>/`` beside its other
settings, exactly as relaunching the run with that setting would. Or TARGET is a model (a local folder or a
hub id, base models too): it is scored as stage 0 of a pseudo-run under ``--out`` (default
``runs/evaluate/<hash>``), on the test cases of ``seed``.

With ``--judge-only`` there is no TARGET: the configured judge (``eval/judge=llm eval.judge.endpoint...``)
scores the published trajectories of ``data`` (default ``data=toolemu_gpt5m``), no agent and no emulator, and
its agreement with each judge that labelled them is reported (``run.calibrate``); ``--out`` then takes
the report.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from agent_safety.config.compose import compose, conf_dir, with_default
from agent_safety.records.identity import eval_id, eval_setting
from agent_safety.run.calibrate import format_report, judge_only
from agent_safety.store.hashing import content_hash


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="score a completed run's stages, or a checkpoint, without training",
                              description=" ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "))
    p.add_argument("target", nargs="?", help="a run dir, or a model folder / hub id (none with --judge-only)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as launch.py takes them (eval=generative ...)")
    p.add_argument("--out", type=Path, default=None, help="where a model's scores go (default runs/evaluate/<hash>); "
                   "with --judge-only, where the agreement report goes (default: printed only)")
    p.add_argument("--judge-only", action="store_true",
                   help="score the data's published trajectories with the configured judge and report its "
                        "agreement with their judges (no agent, no emulator)")
    p.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="--judge-only: the cases of seed's split whose trajectories are scored (default test)")
    p.add_argument("--max-trajectories", type=int, default=None, metavar="N",
                   help="--judge-only: score N of them, drawn with the seed (default all)")
    p.set_defaults(func=main)
    return p


#: The model preset a checkpoint is scored under unless the overrides name one: the plain tiny model's, which
#: leaves the evaluation's settings as they are (the default preset, tiny_agent, fits the agent's prompt to itself).
CHECKPOINT_MODEL = "model=tiny"


def with_presets(overrides: list[str], saved: Any) -> list[str]:
    """The presets of the run's model and data (``model=NAME`` where ``conf/model/NAME.yaml`` is the one it was
    trained with), unless the overrides choose others: what they put into the evaluation setting (the tiny agent's
    prompt, the study data's offline estimate) is what relaunching the run would compose."""
    out = list(overrides)
    for group in ("data", "model"):
        name = str((saved.get(group) or {}).get("name") or "")
        if name and (conf_dir() / group / f"{name}.yaml").is_file():
            out = with_default(out, group, f"{group}={name}")
    return out


def run_config(run_dir: Path, overrides: list[str]) -> Any:
    """The run's own config with the evaluation setting (and paths, threads, logger) the overrides compose."""
    from omegaconf import OmegaConf

    from agent_safety.records.rundir import RunDir

    saved = RunDir(run_dir).config()
    if not saved:
        raise FileNotFoundError(f"{run_dir}: no config.yaml (not a run dir)")
    fresh = compose(with_presets(overrides, saved))
    cfg = OmegaConf.merge(OmegaConf.structured(_schema()), saved)
    for key in ("eval", "logger", "threads", "device"):
        cfg[key] = fresh[key]
    cfg.paths.cache_dir = fresh.paths.cache_dir
    cfg.paths.runs_dir = str(run_dir.resolve().parent.parent)
    cfg.group = run_dir.resolve().parent.name
    return cfg


def _schema() -> Any:
    from agent_safety.config.schema import RunConfig

    return RunConfig


def evaluate_run(run_dir: Path, overrides: list[str]) -> list[dict[str, Any]]:
    return score_run(run_dir, overrides).records


def score_run(run_dir: Path, overrides: list[str]) -> Any:
    """The run's ``RunResult``: ``skipped_training`` when this setting had scored every stage already."""
    from agent_safety.records.rundir import RecordError, RunDir
    from agent_safety.run.schedule import run_dir_for, run_schedule

    rd = RunDir(run_dir)
    problem = rd.status_problem()
    if problem is not None:
        raise RecordError(f"{rd.status_path}: unreadable ({problem}); relaunch the run with the config that "
                          "launched it: it resumes from its records, trains nothing twice and rewrites the file")
    if rd.status().get("status") != "completed":
        raise ValueError(f"{run_dir}: the run is not completed (status {rd.status().get('status')!r}); "
                         "relaunch it to finish training")
    cfg = run_config(run_dir, overrides)
    rid, found, _ = run_dir_for(cfg)
    if found.root.resolve() != run_dir.resolve():
        raise ValueError(f"{run_dir}: its config.yaml hashes to run id {rid}; run `agent-safety migrate` first")
    return run_schedule(cfg)


#: A hub repo id: ``name`` or ``owner/name`` (what ``huggingface_hub`` accepts); anything else is a path.
HUB_ID = re.compile(r"^(?:[\w][\w.-]*/)?[\w][\w.-]*$")


def check_model_target(target: str) -> None:
    """A TARGET that is neither a folder nor a hub id is a path that does not exist: say so before any work
    (rather than a hub error about a repo id, with a pseudo-run dir left behind)."""
    path = Path(target)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{target}: not a folder (a run dir, or a model folder / hub id)")
        return
    if target.startswith((".", "/", "~")) or not HUB_ID.match(target):
        raise FileNotFoundError(f"{target}: no such run dir or model folder (and not a hub id)")


def evaluate_model(target: str, overrides: list[str], out: Path | None) -> dict[str, Any]:
    """Score one model as stage 0 of a pseudo-run: no training, the same evaluators and record."""
    from omegaconf import open_dict

    from agent_safety.config.schema import to_container
    from agent_safety.config.validate import validate
    from agent_safety.evaluate.base import StageModel, make_evaluator
    from agent_safety.records.rundir import RunDir
    from agent_safety.records.tracking import Tracker
    from agent_safety.run.context import prepare
    from agent_safety.run.schedule import emit

    check_model_target(target)
    cfg = compose([*with_default(overrides, "model", CHECKPOINT_MODEL), "model.source=hub", f"model.path={target}",
                   "model.gguf_file=null", "logger=none"])
    with open_dict(cfg):
        cfg.model.name = Path(target).name or target
    validate(cfg)
    config = to_container(cfg)
    rid = f"model-{content_hash({'model': target, 'data': config['data'], 'seed': config['seed']}, 8)}"
    rd = RunDir(out or Path(cfg.paths.runs_dir) / "evaluate" / rid)
    eid = eval_id(config)
    ctx = prepare(cfg, config, rid, eid, rd, Tracker(None))  # the model loads before anything is written
    rd.root.mkdir(parents=True, exist_ok=True)
    rd.write_config(config)
    ev = rd.eval(eid)
    ev.write_setting({"name": cfg.eval.name, "model": target, **eval_setting(config)})
    scores = make_evaluator(ctx).score(StageModel(0, ctx.base_path, lambda: ctx.models.get(0)))
    record = emit(ctx, ev, 0, scores)
    ev.set_status("completed", eval_id=eid, name=cfg.eval.name, stages=1)
    rd.set_status("completed", run_id=rid, model=target)
    return record


def run_judge_only(args: argparse.Namespace) -> int:
    """``--judge-only``: a TARGET that looks like an override (``data=...``) is one; anything else is a mistake."""
    overrides = list(args.overrides)
    if args.target is not None:
        if "=" not in args.target:
            raise ValueError(f"--judge-only takes no TARGET (got {args.target!r}): it scores the data's trajectories")
        overrides.insert(0, args.target)
    report, comparisons = judge_only(overrides, args.split, args.max_trajectories, args.out)
    print(format_report(report, comparisons))
    if args.out is not None:
        print(f"\nwrote {args.out}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.judge_only:
        return run_judge_only(args)
    if args.target is None:
        raise ValueError("give a TARGET (a run dir, or a model folder / hub id), or --judge-only")
    target = Path(args.target)
    if (target / "status.json").is_file() and (target / "config.yaml").is_file():
        from agent_safety.run.schedule import stage_summary

        result = score_run(target, list(args.overrides))
        records, where = result.records, target / "eval" / result.records[0]["eval_id"]
        if result.skipped_training:  # nothing ran: its scores, as the run that made them printed them
            for rec in records:
                print(stage_summary(result.run_id, rec, records[0] if rec["stage"] else None))
            print(f"already scored with this evaluation setting: {len(records)} stage(s) in {where}; nothing run "
                  "(another eval=... scores it another way)")
        else:
            print(f"scored {len(records)} stage(s) of {target} into {where}")
    else:
        record = evaluate_model(args.target, list(args.overrides), args.out)
        print(f"scored {args.target}: safety {record['safety']:.3f}  helpfulness {record['helpfulness']:.3f}")
    return 0
