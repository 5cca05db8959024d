"""What a job knows about where it runs (host, pid, scheduler job id, threads) and how old it is.

``status.json`` records it (``retry`` uses host/pid and the SLURM job id to tell a run that is still running
from a stale one), and the preemption guard of ``train.callbacks`` reads the job's age.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def job_info() -> dict[str, Any]:
    """Where this process runs: host, pid, scheduler job id and torch threads (for status.json)."""
    import torch

    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        info["slurm_job_id"] = f"{array}_{task}" if array and task else slurm
    if os.environ.get("SUBMITIT_EXECUTOR"):
        info["executor"] = os.environ["SUBMITIT_EXECUTOR"]
    return info


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``); None where that cannot be read."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
