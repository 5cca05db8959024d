"""Weights & Biases logging: one W&B run per run, offline unless asked otherwise.

The W&B run id is stored in the run dir, so a resumed or requeued run appends to the same W&B run.
Offline mode is forced unless ``logger.mode=online`` and an API key is present: W&B with a key and no
network would otherwise hang.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent_safety.records import atomic_write, redact


class Tracker:
    """Thin wrapper so the schedule code logs the same way with W&B on or off."""

    def __init__(self, run: Any = None):
        self.run = run

    @property
    def report_to(self) -> list[str]:
        return ["wandb"] if self.run is not None else []

    def log(self, data: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(dict(data))

    def summary(self, data: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(dict(data))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


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

    mode = wandb_mode(logger_cfg["mode"])
    os.environ["WANDB_MODE"] = mode  # TRL's callback and wandb's service read the env
    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / "wandb_id"
    wandb_id = id_file.read_text().strip() if id_file.exists() else f"{run_id}-{os.urandom(3).hex()}"
    atomic_write(id_file, wandb_id + "\n")
    run = wandb.init(
        project=logger_cfg["project"], entity=logger_cfg.get("entity"), id=wandb_id, resume="allow",
        group=group, job_type=job_type, tags=tags, name=run_id, dir=str(run_dir), mode=mode,
        config=redact(dict(config)), settings=wandb.Settings(console="off", x_disable_stats=True),
        reinit="finish_previous",
    )
    return Tracker(run)
