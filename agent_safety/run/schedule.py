"""A run: evaluate the base model (stage 0), then train and evaluate each stage of the schedule in order.

Each stage starts from the previous stage's merged model. The steps are short and named: prepare the run's
context (``run.context``), train or adopt a stage, evaluate it with the run's evaluator
(``evaluate.base``), emit its record. A relaunched run resumes after its last trained stage and evaluates
what its evaluation setting has not scored yet, so a completed run launched with another ``eval`` setting
trains nothing. A completed run is reported and left alone unless ``force=true``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from agent_safety.config.validate import ConfigError, validate
from agent_safety.console import quiet, say
from agent_safety.data.synthetic.judges import BEHAVIOUR_CLASSES
from agent_safety.evaluate.base import StageModel, make_evaluator
from agent_safety.pairs.rules import PairRule
from agent_safety.records.identity import eval_id, eval_setting, run_id, stage_key
from agent_safety.records.job import job_info
from agent_safety.records.rundir import TRAINING_FIELDS, EvalDir, RecordError, RunDir, redact, timestamp
from agent_safety.records.schema import StageRecord
from agent_safety.records.tracking import start as start_tracking
from agent_safety.run.context import configure_threads, prepare
from agent_safety.store.io import probe_writable

if TYPE_CHECKING:
    from agent_safety.evaluate.base import Evaluator
    from agent_safety.run.context import RunContext

log = logging.getLogger(__name__)
#: The run's log: what libraries print while it runs (warnings, W&B, the Trainer's logs), appended per launch.
LOG_FILE = "run.log"


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped_training: bool = False


def run_dir_for(cfg: DictConfig) -> tuple[str, RunDir, dict[str, Any]]:
    from agent_safety.config.schema import to_container

    config = to_container(cfg)
    rid = run_id(config)
    return rid, RunDir(Path(cfg.paths.runs_dir) / cfg.group / rid), config


def run_schedule(cfg: DictConfig) -> RunResult:
    """Run (or resume) the schedule described by ``cfg``; see the module docstring. One job at a time runs a
    given run dir: a second launch of the same config waits for the first, then finds it completed."""
    validate(cfg)
    rid, rd, config = run_dir_for(cfg)
    eid = eval_id(config)
    say(run_header(cfg, rid, rd.root))
    if not cfg.force and finished(rd, eid):  # reported without a lock, so a read-only runs dir can say it too
        return _already(rid, rd, eid)
    check_writable(cfg)
    with rd.lock() as waited:  # a second launch of the same config waits here while the first runs it
        if waited and finished(rd, eid):  # completed meanwhile: left alone, even with force=true
            log.info("run %s was completed by another job while this one waited", rid)
            return _already(rid, rd, eid)
        return _run_locked(cfg, rid, rd, config, eid)


def run_header(cfg: DictConfig, rid: str, root: Path) -> str:
    """What a run says before any work: its id and config in one line, its evaluation, where it writes."""
    from agent_safety.config.describe import evaluation, run_line

    pad = " " * (len(rid) + 3)
    return (f"[{rid}] {run_line(cfg)}\n{pad}evaluation: {evaluation(cfg)}\n"
            f"{pad}writes {root} (library output: {root / LOG_FILE})")


def finished(rd: RunDir, eid: str) -> bool:
    """Trained and scored with this evaluation setting: nothing left to do."""
    return rd.status().get("status") == "completed" and rd.eval(eid).completed()


def _already(rid: str, rd: RunDir, eid: str) -> RunResult:
    log.debug("run %s already completed: %s (force=true to rerun)", rid, rd.root)  # said on the terminal
    return RunResult(rid, rd.root, "completed", rd.eval(eid).records(), skipped_training=True)


def check_writable(cfg: DictConfig) -> None:
    """The runs and cache folders can be written, or one line naming the folder and key, before any work."""
    for key, path in (("paths.runs_dir", Path(cfg.paths.runs_dir) / cfg.group), ("paths.cache_dir",
                                                                                  Path(cfg.paths.cache_dir))):
        problem = probe_writable(path)
        if problem:
            raise ConfigError(f"{key}: cannot write {problem}")


def check_trained(rd: RunDir, n_stages: int, eid: str) -> None:
    """Scoring a completed run never trains: each stage this setting has yet to score must have its merged
    model, or the run stops here, before any work, naming the missing folder and how to get it back."""
    trained, scored = set(rd.trained_stages()), set(rd.eval(eid).evaluated_stages())
    for stage in range(1, n_stages + 1):
        if stage not in trained and stage not in scored:
            raise RecordError(
                f"{rd.model_dir(stage)}: stage {stage}'s model (merged, or as its stacked adapter) is missing from "
                "this completed run, and "
                "evaluation never trains; restore the folder, or retrain the run by launching its config "
                f"({rd.root / 'config.yaml'}) again with force=true")


def _run_locked(cfg: DictConfig, rid: str, rd: RunDir, config: dict[str, Any], eid: str) -> RunResult:
    """The run, under its lock: migrate, snapshot, train and score what is missing, mark it completed."""
    if rd.is_legacy():
        log.warning("run %s: moving metrics.jsonl into eval/%s/ (the layout before evaluation settings)", rid, eid)
        rd.migrate_legacy(eid, eval_setting(config))
        if not cfg.force and finished(rd, eid):
            return _already(rid, rd, eid)
    trained_before = rd.status().get("status") == "completed" and not cfg.force  # this pass only scores
    if trained_before:
        check_trained(rd, len(cfg.schedule.stages), eid)
    if cfg.force and rd.root.exists():
        shutil.rmtree(rd.root)
    rd.root.mkdir(parents=True, exist_ok=True)
    if not trained_before:  # the snapshot is what trained the run; each evaluation keeps its own eval.yaml
        rd.write_config(config)
    configure_threads(cfg.threads)  # before job_info() records the threads this job got
    rd.set_status("running", run_id=rid, group=cfg.group, started=timestamp(),
                  attempt=int(rd.status().get("attempt") or 0) + 1, job=job_info(), note=None)
    with quiet(rd.root / LOG_FILE, scrub=redact):
        return _track_and_run(cfg, rid, rd, config, eid, trained_before)


def _track_and_run(cfg: DictConfig, rid: str, rd: RunDir, config: dict[str, Any], eid: str,
                   trained_before: bool) -> RunResult:
    """Train and score under the run's W&B run; the status says how it ended."""
    stages = list(cfg.schedule.stages)
    tags = [cfg.model.name, *dict.fromkeys(stages), f"beta={cfg.trainer.beta}", f"seed={cfg.seed}"]
    tracker = start_tracking(cfg.logger, rd.root, rid, cfg.group, cfg.schedule.name, tags, config)
    try:
        records = run_stages(cfg, config, rid, eid, rd, tracker)
        rd.set_status("completed", run_id=rid, finished=timestamp())
        tracker.finish(0)
        return RunResult(rid, rd.root, "completed", records)
    except (SystemExit, KeyboardInterrupt) as e:  # preempted or timed out: a requeued job resumes it
        rd.set_status("preempted", run_id=rid, note=f"interrupted ({type(e).__name__} {e}); relaunching resumes it")
        tracker.finish(1, preempted=True)
        raise
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        if trained_before:  # the trained run and its other settings stand; this setting's scores failed
            rd.eval(eid).set_status("failed", eval_id=eid, error=error)
            rd.set_status("completed", run_id=rid, note=f"evaluation {eid} failed: {error}")
        else:
            rd.set_status("failed", run_id=rid, error=error)
        tracker.finish(1)
        raise


def run_stages(cfg: DictConfig, config: dict[str, Any], rid: str, eid: str, rd: RunDir,
               tracker: Any) -> list[dict[str, Any]]:
    """Stage 0, then each stage in order: train it (or adopt it, or find it trained), then evaluate it."""
    from agent_safety.train.reuse import shared_stage

    ctx = prepare(cfg, config, rid, eid, rd, tracker)
    evaluator = make_evaluator(ctx)
    ev = rd.eval(eid)
    ev.write_setting({"name": cfg.eval.name, **eval_setting(config)})
    evaluate_stage(ctx, evaluator, ev, 0, source=None)
    share = bool(cfg.reuse_stages) and not cfg.force
    for stage in range(1, len(cfg.schedule.stages) + 1):
        needs_training = stage not in rd.trained_stages()
        with shared_stage(Path(cfg.paths.runs_dir), stage_key(config, stage), stage, share and needs_training) \
                as shared:
            source = train_or_adopt(ctx, stage, shared) if needs_training else None
            evaluate_stage(ctx, evaluator, ev, stage, source)
            if shared is not None and source is None:
                shared.publish(rd)
    records = ev.records()
    ev.set_status("completed", eval_id=eid, name=cfg.eval.name, stages=len(records))
    tracker.summary({"run_dir": str(rd.root), **summary_scores(records, cfg.eval.name)})
    return records


def train_or_adopt(ctx: RunContext, stage: int, shared: Any) -> RunDir | None:
    """Make stage ``stage`` trained in this run dir; returns the run dir it was adopted from, if any."""
    src = shared.source() if shared is not None else None
    if src is not None and src.root.resolve() != ctx.rd.root.resolve():
        from agent_safety.train.reuse import adopt

        ctx.rd.write_training_record(adopt(src, ctx.rd, stage))  # the same prefix, trained by another run
        return src
    train(ctx, stage)
    return None


def train(ctx: RunContext, stage: int) -> None:
    """One DPO stage on the previous stage's merged model; its model and training line land in the run dir."""
    from transformers import set_seed

    from agent_safety.pairs.sets import pair_set
    from agent_safety.train.callbacks import StepBar
    from agent_safety.train.stage import train_stage

    cfg = ctx.cfg
    name = cfg.schedule.stages[stage - 1]
    objective = cfg.objectives[name]
    rows = pair_set(ctx.bench, ctx.tokenized, PairRule.from_config(objective), ctx.train_cases,
                    cfg.trainer.max_length, cfg.trainer.max_pairs, cfg.seed, ctx.cache_dir, ctx.tokenizer_key)
    log.info("stage %d (%s): %d pairs, %d dropped as longer than %d tokens", stage, name, len(rows.rows),
             rows.dropped, cfg.trainer.max_length)
    epochs = objective.num_train_epochs or cfg.trainer.num_train_epochs
    start = ctx.models.take(stage - 1)
    set_seed(cfg.seed + stage)  # the same stream whether or not earlier stages ran in this process
    below = stack_below(ctx.rd, stage)
    if below is None:
        log.warning("stage %d: earlier stages have no adapters on disk, so no stacked adapter; saving the merged "
                    "model whatever trainer.save_merged says", stage)
    model, metrics = train_stage(start, ctx.tokenizer, rows, cfg.trainer, ctx.rd.stage_dir(stage), epochs,
                                 cfg.seed, ctx.tracker.report_to, ctx.run_id,
                                 callbacks=[*ctx.tracker.trainer_callbacks(stage),
                                            StepBar(f"stage {stage} ({name}): training")], stack_below=below,
                                 save_merged=bool(cfg.trainer.save_merged))
    model.to(ctx.device)
    ctx.models.put(stage, model)
    ctx.rd.write_training_record({"stage": stage, "objectives": list(cfg.schedule.stages[:stage]),
                                  "pairs_used": len(rows.rows), "pairs_dropped": rows.dropped,
                                  "train_loss": metrics.get("train_loss"), "trained_by": None,
                                  **float_setting()})


def float_setting() -> dict[str, Any]:
    """What CPU float results depend on besides the config: the torch build and its thread count (the same run
    id trained or scored with another of either can differ in the last digits, and greedy decoding amplifies
    that into other episodes)."""
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


def stack_below(rd: RunDir, stage: int) -> list[Path] | None:
    """What stage ``stage``'s stacked adapter stacks on: stage k-1's stacked adapter, else the adapters of
    stages 1..k-1 (stages trained before stacked adapters were written); None where one is missing."""
    if stage <= 1:
        return []
    if rd.has_stacked(stage - 1):
        return [rd.stacked_dir(stage - 1)]
    adapters = [rd.adapter_dir(k) for k in range(1, stage)]
    return adapters if all((a / "adapter_config.json").exists() for a in adapters) else None


def evaluate_stage(ctx: RunContext, evaluator: Evaluator, ev: EvalDir, stage: int, source: RunDir | None) -> None:
    """Score the stage unless this setting already has; an adopted stage takes its source's scores when the
    source was evaluated the same way (same model, same setting: same numbers)."""
    if stage in ev.evaluated_stages():
        return
    copied = source.eval(ev.eval_id).records() if source is not None else []
    scores = next((r for r in copied if r["stage"] == stage), None)
    if scores is None:
        scores = evaluator.score(StageModel(stage, ctx.models.path(stage), lambda: ctx.models.get(stage),
                                            adapter=ctx.models.adapter(stage), base=ctx.models.base_path))
    emit(ctx, ev, stage, scores)


def emit(ctx: RunContext, ev: EvalDir, stage: int, scores: dict[str, Any]) -> dict[str, Any]:
    """Write the stage record (this run's header, the stage's training facts, the scores), log and print it."""
    cfg = ctx.cfg
    training = ctx.rd.training_record(stage) or {"pairs_used": 0, "pairs_dropped": 0}
    fields = set(StageRecord.__dataclass_fields__) - {"extra"}
    header = {"run_id": ctx.run_id, "group": cfg.group, "model": cfg.model.name, "data": cfg.data.name,
              "judge": ctx.bench.judge, "schedule": cfg.schedule.name, "stage": stage,
              "objectives": list(cfg.schedule.stages[:stage]), "label_judges": [ctx.bench.judge] * stage,
              "beta": float(cfg.trainer.beta), "seed": int(cfg.seed), "data_skipped": len(ctx.bench.skipped),
              "eval_id": ev.eval_id, "eval_name": cfg.eval.name}
    known = {k: v for k, v in scores.items() if k in fields and k not in header and k not in TRAINING_FIELDS}
    extra = {**float_setting(), **{k: v for k, v in scores.items() if k not in fields}}
    record = StageRecord(**header, **known, **{k: training.get(k) for k in TRAINING_FIELDS}, extra=extra)
    rec = record.to_dict()
    ev.write_record(rec)
    key = f"eval/{cfg.eval.name}"  # against ``stage`` (records.tracking defines it as these keys' step)
    ctx.tracker.log({"stage": stage, f"{key}/safety": rec["safety"], f"{key}/helpfulness": rec["helpfulness"],
                     **{f"{key}/{k}": v for k, v in rec.items() if k.startswith("pref_acc") and v is not None}})
    base = next((r for r in ev.records() if r["stage"] == 0), None) if stage else None
    say(stage_summary(ctx.run_id, rec, base))
    return rec


def summary_scores(records: list[dict[str, Any]], name: str) -> dict[str, float]:
    """The W&B run summary's scores: every stage's (``eval/<name>/stage_<k>/safety``...), their change from the base
    (``delta_safety``...) and the last stage's as ``final/*``: a sweep group's runs table is its results table, and a
    scatter of ``final/delta_safety`` against ``final/delta_helpfulness`` its frontier (docs/runs.md)."""
    base = next((r for r in records if r["stage"] == 0), None)
    out: dict[str, float] = {}
    for rec in records:
        key = f"eval/{name}/stage_{rec['stage']}"
        out[f"{key}/safety"], out[f"{key}/helpfulness"] = rec["safety"], rec["helpfulness"]
        if base is not None and rec["stage"]:
            out[f"{key}/delta_safety"] = rec["safety"] - base["safety"]
            out[f"{key}/delta_helpfulness"] = rec["helpfulness"] - base["helpfulness"]
    if records:
        last = records[-1]
        out["final/safety"], out["final/helpfulness"] = last["safety"], last["helpfulness"]
        if base is not None:
            out["final/delta_safety"] = last["safety"] - base["safety"]
            out["final/delta_helpfulness"] = last["helpfulness"] - base["helpfulness"]
    return out


def stage_summary(run_id: str, rec: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    """The lines a run prints for a scored stage: its scores, their change from the base, and (on the synthetic
    benchmark) what its episodes did."""
    name = "base" if rec["stage"] == 0 else rec["objectives"][-1]
    line = f"[{run_id}] stage {rec['stage']} ({name}): safety {rec['safety']:.3f}  helpfulness {rec['helpfulness']:.3f}"
    if base is not None:
        ds, dh = rec["safety"] - base["safety"], rec["helpfulness"] - base["helpfulness"]
        line += f"  ({ds:+.3f} / {dh:+.3f} from the base)"
    if rec.get("trained_by"):
        line += f"  (trained by run {rec['trained_by']})"
    if counts := rec.get("behaviours"):
        order = [*BEHAVIOUR_CLASSES, *sorted(set(counts) - set(BEHAVIOUR_CLASSES))]
        line += "\n" + " " * (len(run_id) + 3) + ", ".join(f"{k} {counts[k]}" for k in order if k in counts)
        if rec.get("unparsed_turns"):  # a stage that breaks how the agent writes says so beside what it did
            line += f"; {rec['unparsed_turns']} of {rec['agent_turns']} turns unparsed"
    return line
