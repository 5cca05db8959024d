"""The body of ``launch.py``: run one composed config (or plan it) and report where its records are."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from omegaconf import DictConfig

from agent_safety.config.validate import ConfigError
from agent_safety.data.toolemu import DataError
from agent_safety.records.rundir import RecordError
from agent_safety.run.schedule import run_dir_for, run_schedule

log = logging.getLogger(__name__)
#: Errors whose message is the whole story (it names the key, file, line or endpoint): one line, no traceback.
#: ConnectionError: an endpoint's error (``EndpointError``), caught without importing the client.
ONE_LINE = (ConfigError, DataError, RecordError, ConnectionError)


def _hydra() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def thread_share(cfg: DictConfig) -> int | None:
    """torch threads for this job: the config's, else the launcher's CPUs per task.

    submitit's local executor starts every job of a sweep at once, so without a share each would
    use every core; there one thread per job is the default.
    """
    if cfg.threads:
        return int(cfg.threads)
    hc = _hydra()
    cpus = hc.launcher.get("cpus_per_task") if hc is not None and "launcher" in hc else None
    if cpus:
        return int(cpus)
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        return 1
    return None


def is_multirun() -> bool:
    from hydra.types import RunMode

    hc = _hydra()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def record_failure(cfg: DictConfig, error: Exception) -> None:
    """Mark a sweep's run failed when its config or data stopped it before it wrote ``status.json``: a run
    with no status reads as missing, and ``agent-safety retry`` could not tell it failed."""
    try:
        rid, rd, _ = run_dir_for(cfg)
    except Exception as e:  # a config too broken to name its run dir: the sweep's log has the error
        log.warning("cannot record the failure in a run dir (%s: %s)", type(e).__name__, e)
        return
    try:
        if rd.status().get("status") != "completed":
            rd.set_status("failed", run_id=rid, error=f"{type(error).__name__}: {error}")
    except OSError as e:  # an unwritable runs dir is what the error says
        log.warning("cannot record the failure in %s (%s)", rd.root, e)


def launch(cfg: DictConfig) -> dict:
    """Run ``cfg``. Bad config or data exits with a one-line error instead of a traceback.

    In a multirun a failed run is recorded (its ``status.json`` holds the error) and the sweep goes on.
    """
    from omegaconf import open_dict

    threads = thread_share(cfg)
    if threads:
        with open_dict(cfg):
            cfg.threads = threads
    if cfg.get("plan"):
        from agent_safety.launch.plan import plan_line

        return plan_line(cfg)
    try:
        result = run_schedule(cfg)
    except ONE_LINE as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if is_multirun():
            if not isinstance(e, ConnectionError):  # run_schedule recorded it already
                record_failure(cfg, e)
            return {"status": "failed", "error": str(e)}
        raise SystemExit(2) from None
    except Exception as e:
        if not is_multirun():
            raise
        log.exception("run failed; the sweep goes on")
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    from agent_safety.console import say
    from agent_safety.run.schedule import stage_summary

    if result.skipped_training:  # the results again, as the run that trained it printed them
        base = next((r for r in result.records if r["stage"] == 0), None)
        for rec in result.records:
            say(stage_summary(result.run_id, rec, base if rec["stage"] else None))
        say(f"[{result.run_id}] already completed, nothing to do (force=true reruns it)")
    last = result.records[-1] if result.records else {}
    say(f"[{result.run_id}] {result.status}: run dir {result.run_dir}")
    return {"run_id": result.run_id, "run_dir": str(result.run_dir), "status": result.status,
            "safety": last.get("safety"), "helpfulness": last.get("helpfulness"),
            "stages": [{k: r.get(k) for k in ("stage", "safety", "helpfulness")} for r in result.records]}
