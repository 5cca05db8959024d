"""A run: evaluate the base model (stage 0), then train and evaluate each stage of the schedule in order.

Each stage starts from the previous stage's merged model. A relaunched run resumes after its last
completed stage; a completed run is reported and left alone unless ``force=true``.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agent_safety.config.schema import to_container
from agent_safety.config.validate import validate
from agent_safety.data.benchmark import load_data
from agent_safety.data.split import split_cases
from agent_safety.evaluate.estimate import (
    as_record,
    base_cache_path,
    cached_base_logps,
    candidates,
    estimate,
    sequence_logps,
)
from agent_safety.launch.cluster import job_info
from agent_safety.pairs.formatting import cached_tokenize
from agent_safety.pairs.rules import PairRule
from agent_safety.pairs.sets import pair_set
from agent_safety.records.cache import tokenizer_key
from agent_safety.records.rundir import RunDir, run_id
from agent_safety.records.tracking import start as start_tracking
from agent_safety.train.models import keep_freed_memory, load_model, load_tokenizer, pick_device, resolve_base
from agent_safety.train.reuse import adopt, shared_stage, stage_key
from agent_safety.train.stage import train_stage

log = logging.getLogger(__name__)
SHORT = {"safety": "S", "helpfulness": "H", "both": "SH"}


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped_training: bool = False


def run_dir_for(cfg: DictConfig) -> tuple[str, RunDir, dict[str, Any]]:
    config = to_container(cfg)
    rid = run_id(config)
    return rid, RunDir(Path(cfg.paths.runs_dir) / cfg.group / rid), config


def configure_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))


def run_schedule(cfg: DictConfig) -> RunResult:
    """Run (or resume) the schedule described by ``cfg``; see the module docstring."""
    validate(cfg)
    rid, rd, config = run_dir_for(cfg)
    if rd.status().get("status") == "completed" and not cfg.force:
        log.info("run %s already completed: %s (force=true to rerun)", rid, rd.root)
        return RunResult(rid, rd.root, "completed", rd.metrics(), skipped_training=True)
    if cfg.force and rd.root.exists():
        shutil.rmtree(rd.root)
    rd.root.mkdir(parents=True, exist_ok=True)
    rd.write_config(config)
    configure_threads(cfg.threads)
    rd.set_status("running", run_id=rid, group=cfg.group, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  attempt=int(rd.status().get("attempt") or 0) + 1, job=job_info(), note=None)
    stages = list(cfg.schedule.stages)
    tags = [cfg.model.name, *dict.fromkeys(stages), f"beta={cfg.trainer.beta}", f"seed={cfg.seed}"]
    tracker = start_tracking(cfg.logger, rd.root, rid, cfg.group, cfg.schedule.name, tags, config)
    try:
        records = _run(cfg, config, rid, rd, tracker)
        rd.set_status("completed", run_id=rid, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        tracker.finish(0)
        return RunResult(rid, rd.root, "completed", records)
    except (SystemExit, KeyboardInterrupt) as e:  # preempted or timed out: a requeued job resumes it
        rd.set_status("preempted", run_id=rid, note=f"interrupted ({type(e).__name__} {e}); relaunching resumes it")
        tracker.finish(1, preempted=True)
        raise
    except BaseException as e:
        rd.set_status("failed", run_id=rid, error=f"{type(e).__name__}: {e}")
        tracker.finish(1)
        raise


def _run(cfg: DictConfig, config: dict[str, Any], rid: str, rd: RunDir, tracker: Any) -> list[dict[str, Any]]:
    from transformers import set_seed

    configure_threads(cfg.threads)
    set_seed(cfg.seed)
    cache_dir = Path(cfg.paths.cache_dir)
    device = pick_device(cfg.device)
    if device == "cpu":
        keep_freed_memory()
    bench = load_data(cfg.data, cache_dir)
    train_cases, test_cases = split_cases(bench.n_cases, cfg.seed)
    if cfg.eval.max_cases:
        test_cases = test_cases[: cfg.eval.max_cases]
    base_path, base_identity = resolve_base(cfg.model, bench, cache_dir)
    tokenizer = load_tokenizer(base_path, cfg.model)
    tokenized = cached_tokenize(tokenizer, bench, cache_dir)
    tok_key = tokenizer_key(tokenizer)
    test_idx = candidates(bench, test_cases)
    eval_len = cfg.eval.max_length or cfg.trainer.max_length
    rules = {m: PairRule.from_config(cfg.objectives[m]) for m in ("safety", "helpfulness") if m in cfg.objectives}

    done = rd.completed_stages()
    last = max(done, default=0)
    model = None  # the model the next stage trains from, loaded when first needed (adopted stages need none)

    def score(m: Any, desc: str) -> tuple[Any, Any]:
        return sequence_logps(m, tokenized, bench, test_idx, cfg.eval.batch_size, eval_len, desc,
                              pad_id=tokenizer.pad_token_id)  # load_tokenizer falls back to eos

    def base_scores() -> tuple[Any, Any]:
        nonlocal model
        base = load_model(base_path, cfg.model, device)
        if last == 0:
            model = base
        try:
            return score(base, "base log-probs")
        finally:
            del base

    base_logps, n_tokens = cached_base_logps(
        base_cache_path(cache_dir, base_identity, bench, test_idx, eval_len), base_scores)

    common = {"run_id": rid, "group": cfg.group, "model": cfg.model.name, "data": cfg.data.name,
              "judge": bench.judge, "schedule": cfg.schedule.name, "beta": float(cfg.trainer.beta),
              "seed": int(cfg.seed), "data_skipped": len(bench.skipped)}

    def emit(rec: dict[str, Any], note: str = "") -> dict[str, Any]:
        rd.write_stage_metrics(rec)
        tracker.log({"stage": rec["stage"], "estimate/safety": rec["safety"],
                     "estimate/helpfulness": rec["helpfulness"],
                     **{f"estimate/{k}": v for k, v in rec.items() if k.startswith("pref_acc") and v is not None}})
        stage = rec["stage"]
        print(f"[{rid}] stage {stage} ({'base' if stage == 0 else rec['objectives'][-1]}): "
              f"safety {rec['safety']:.3f}  helpfulness {rec['helpfulness']:.3f}{note}", flush=True)
        return rec

    def header(stage: int) -> dict[str, Any]:
        return {**common, "stage": stage, "objectives": list(cfg.schedule.stages[:stage]),
                "label_judges": [bench.judge] * stage}

    def record(stage: int, logps: Any, extra: dict[str, Any]) -> dict[str, Any]:
        est = estimate(bench, test_idx, logps, base_logps, n_tokens, rules, cfg.eval.per_token,
                       cfg.eval.temperature)
        return emit({**header(stage), **as_record(est), **extra})

    if 0 not in done:
        record(0, base_logps, {"pairs_used": 0, "pairs_dropped": 0})
    share = bool(cfg.reuse_stages) and not cfg.force
    for stage, name in enumerate(cfg.schedule.stages, 1):
        if stage in done:
            continue
        with shared_stage(Path(cfg.paths.runs_dir), stage_key(config, stage), stage, share) as shared:
            src = shared.source() if shared else None
            if src is not None and src.root.resolve() != rd.root.resolve():
                trained = adopt(src, rd, stage)  # the same prefix was trained by another run: link it
                emit({**trained, **header(stage), "trained_by": trained["run_id"]},
                     f"  (trained by run {trained['run_id']})")
                model = None
                continue
            if model is None:
                model = load_model(str(rd.model_dir(stage - 1)) if stage > 1 else base_path, cfg.model, device)
            objective = cfg.objectives[name]
            rows = pair_set(bench, tokenized, PairRule.from_config(objective), train_cases, cfg.trainer.max_length,
                            cfg.trainer.max_pairs, cfg.seed, cache_dir, tok_key)
            log.info("stage %d (%s): %d pairs, %d dropped as longer than %d tokens", stage, name, len(rows.rows),
                     rows.dropped, cfg.trainer.max_length)
            epochs = objective.num_train_epochs or cfg.trainer.num_train_epochs
            set_seed(cfg.seed + stage)  # the same stream whether or not earlier stages ran in this process
            model, train_metrics = train_stage(model, tokenizer, rows, cfg.trainer, rd.stage_dir(stage), epochs,
                                               cfg.seed, tracker.report_to, rid,
                                               callbacks=tracker.trainer_callbacks(stage))
            model.to(device)
            logps, _ = score(model, f"stage {stage} log-probs")
            record(stage, logps, {"pairs_used": len(rows.rows), "pairs_dropped": rows.dropped,
                                  "train_loss": train_metrics.get("train_loss")})
            if shared:
                shared.publish(rd)
    rd_records = rd.metrics()
    tracker.summary({"run_dir": str(rd.root), "final/safety": rd_records[-1]["safety"],
                     "final/helpfulness": rd_records[-1]["helpfulness"]})
    return rd_records
