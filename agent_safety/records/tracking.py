"""Weights & Biases logging: one W&B run per run, offline unless asked otherwise.

The W&B run id is stored in the run dir, so a resumed or requeued run appends to the same W&B run.
Offline mode is forced unless ``logger.mode=online`` and an API key is present: W&B with a key and no
network would otherwise hang.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent_safety.records.rundir import redact
from agent_safety.store.io import atomic_write

log = logging.getLogger(__name__)


class Tracker:
    """Thin wrapper so the schedule code logs the same way with W&B on or off.

    W&B never fails a run: on a cluster the preemption SIGTERM reaches every process of the job, W&B's
    service included, and the run must still save its checkpoint and exit cleanly. After the first W&B
    error the tracker warns once and logs nothing more in this process (a requeued job starts a new one).
    """

    def __init__(self, run: Any = None):
        self.run = run

    @property
    def report_to(self) -> list[str]:
        """The Trainer's own integrations: none; its logs reach W&B through :meth:`trainer_callbacks`."""
        return []

    def trainer_callbacks(self, stage: int) -> list[Any]:
        return [_train_logs_class()(self, stage)] if self.run is not None else []

    def _call(self, what: str, fn: Any) -> None:
        if self.run is None:
            return
        try:
            fn(self.run)
        except Exception as e:  # a dead W&B service: keep training, stop logging
            log.warning("W&B %s failed (%s: %s); no more W&B logging in this process", what, type(e).__name__, e)
            self.run = None

    def log(self, data: Mapping[str, Any]) -> None:
        self._call("log", lambda run: run.log(dict(data)))

    def summary(self, data: Mapping[str, Any]) -> None:
        self._call("summary", lambda run: run.summary.update(dict(data)))

    def finish(self, exit_code: int = 0, preempted: bool = False) -> None:
        """End the W&B run; a preempted one is marked so, and the requeued job resumes the same W&B run."""
        if preempted:
            self._call("mark_preempting", lambda run: run.mark_preempting())
        self._call("finish", lambda run: run.finish(exit_code=exit_code))
        self.run = None


def _train_logs_class() -> type:
    from transformers import TrainerCallback

    class TrainLogs(TrainerCallback):
        """The Trainer's loss/reward logs, sent through the tracker (``train/*`` against ``train/global_step``)."""

        def __init__(self, tracker: Tracker, stage: int) -> None:
            self.tracker, self.stage = tracker, stage

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> None:
            values = {f"train/{k}": v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if values:
                self.tracker.log({"stage": self.stage, "train/global_step": state.global_step, **values})

    return TrainLogs


def _settings(wandb: Any) -> Any:
    """No console capture, system stats or banner (set per run, not in the env); and the offline file flushed
    every 2 s (wandb's default is 15 s), because a preempted job's W&B service dies with the job's SIGTERM and
    loses what it had not written."""
    extra = {"x_transaction_log_flush_interval": 2.0, "silent": True}
    fields = getattr(wandb.Settings, "model_fields", {})
    return wandb.Settings(console="off", x_disable_stats=True, **{k: v for k, v in extra.items() if k in fields})


def wandb_mode(requested: str) -> str:
    if requested == "online" and os.environ.get("WANDB_API_KEY"):
        return "online"
    return "disabled" if requested == "disabled" else "offline"


def start(logger_cfg: Mapping[str, Any], run_dir: Path, run_id: str, group: str, job_type: str,
          tags: list[str], config: Mapping[str, Any]) -> Tracker:
    """Start (or resume) the run's W&B run; ``backend=none`` gives a tracker that logs nothing."""
    if logger_cfg["backend"] == "none":
        return Tracker(None)
    import wandb

    # the mode goes to this run only, never to os.environ: the next job of an in-process sweep would inherit it
    mode = wandb_mode(logger_cfg["mode"])
    id_file = run_dir / "wandb_id"
    wandb_id = id_file.read_text().strip() if id_file.exists() else f"{run_id}-{os.urandom(3).hex()}"
    atomic_write(id_file, wandb_id + "\n")
    run = wandb.init(
        project=logger_cfg["project"], entity=logger_cfg.get("entity"), id=wandb_id, resume="allow",
        group=group, job_type=job_type, tags=tags, name=run_id, dir=str(run_dir), mode=mode,
        config=redact(dict(config)), settings=_settings(wandb),
        reinit="finish_previous",
    )
    tracker = Tracker(run)
    tracker._call("define_metric", _define_steps)
    return tracker


def _define_steps(run: Any) -> None:
    """W&B charts each stage's scores against the stage and the training curves against their step."""
    run.define_metric("stage")
    run.define_metric("eval/*", step_metric="stage")
    run.define_metric("train/global_step")
    run.define_metric("train/*", step_metric="train/global_step")
