"""The body of ``launch.py``: run one composed config and report where its records are."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from agent_safety.config import ConfigError
from agent_safety.trajectories import DataError

log = logging.getLogger(__name__)


def launch(cfg: DictConfig) -> dict:
    """Run ``cfg``; bad config or data exits with a one-line error instead of a traceback."""
    from agent_safety.schedule import run_schedule

    try:
        result = run_schedule(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if result.skipped_training:
        print(f"[{result.run_id}] already completed, nothing to do (force=true reruns it)", flush=True)
    last = result.records[-1] if result.records else {}
    print(f"[{result.run_id}] {result.status}: run dir {result.run_dir}", flush=True)
    return {"run_id": result.run_id, "run_dir": str(result.run_dir), "status": result.status,
            "safety": last.get("safety"), "helpfulness": last.get("helpfulness")}
