"""What the launching process says when the cluster will not take the jobs.

Kept free of torch, transformers and submitit at import time: ``retry``, plan mode and ``launch.py`` read it
in processes that train nothing. What a job knows about where it runs is ``records.job``; the preemption-safe
training callbacks live in ``train.callbacks``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

log = logging.getLogger(__name__)


#: sbatch flags of a submission file, and the launcher key (conf/hydra/launcher/slurm.yaml) that sets each.
REQUEST_KEYS = (("partition", "partition"), ("gpus-per-node", "gpus_per_node"), ("cpus-per-task", "cpus_per_task"),
                ("mem", "mem_gb"), ("constraint", "constraint"))
_SBATCH_FLAG = re.compile(r"^#SBATCH\s+--([\w-]+)(?:=(.*))?$")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from: submitit raises FailedJobError from sbatch's own error."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        e = todo.pop()
        if id(e) not in seen:
            seen.add(id(e))
            yield e
            todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def sbatch_request(submission_file: str | Path) -> dict[str, str | None]:
    """The launcher keys of ``REQUEST_KEYS`` as the refused submission file asked for them (None: not asked)."""
    flags: dict[str, str] = {}
    for line in Path(submission_file).read_text().splitlines():
        if m := _SBATCH_FLAG.match(line.strip()):
            flags[m.group(1)] = m.group(2) or ""
    mem = flags.get("mem")
    flags["mem"] = mem[:-2] if mem and mem.endswith("GB") else mem  # submitit writes mem_gb as --mem=<n>GB
    return {key: flags.get(flag) for flag, key in REQUEST_KEYS}


def _sbatch_reason(stderr: str | bytes | None, returncode: int) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    lines = [line.split("error:", 1)[-1].strip() for line in text.splitlines() if line.strip()]
    return "; ".join(dict.fromkeys(lines)) or f"sbatch exited with status {returncode} and said nothing"


def sbatch_refusal(error: subprocess.CalledProcessError) -> str:
    """One line: sbatch's reason, the request it refused, and the preset keys that change the request."""
    reason = _sbatch_reason(error.stderr, error.returncode)
    try:
        asked = sbatch_request(error.cmd[-1])
        request = " ".join(f"{k}={'null' if v is None else v}" for k, v in asked.items())
        came = f"; the jobs asked for hydra.launcher.{request}"
    except (OSError, IndexError, TypeError):
        came = ""
    return (f"launch.py: error: sbatch refused the jobs ({reason}){came}. Fit the request to the cluster with "
            "+cluster=NAME (a preset in conf/cluster/) or hydra.launcher.partition=..., "
            "hydra.launcher.gpus_per_node=... (null on a CPU-only partition), hydra.launcher.cpus_per_task=..., "
            "hydra.launcher.mem_gb=...")


def submission_error(error: BaseException) -> str | None:
    """The one line to print for a launcher that could not submit the sweep, or None for any other error."""
    for e in _chain(error):
        cmd = getattr(e, "cmd", None)
        if isinstance(e, subprocess.CalledProcessError) and cmd and Path(str(list(cmd)[0])).name == "sbatch":
            return sbatch_refusal(e)
        if isinstance(e, RuntimeError) and 'Could not detect "srun"' in str(e):
            return ("launch.py: error: hydra/launcher=slurm needs SLURM, and this machine has no `srun`: submit from a "
                    "SLURM login node, or drop hydra/launcher=slurm to run here")
    return None


#: errno values that mean "this path cannot be written here": the user picks another folder.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT)


def write_error(error: BaseException) -> str | None:
    """One line for a folder that cannot be written (a read-only runs dir, Hydra's ``.launch`` in it), or None."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in UNWRITABLE and e.filename:
            return (f"launch.py: error: cannot write {e.filename}: {e.strerror} (paths.runs_dir and paths.cache_dir "
                    "must be writable folders; AGENT_SAFETY_RUNS and AGENT_SAFETY_CACHE set them)")
    return None


def _below_hydra(tb: TracebackType | None, report: Callable[..., Any]) -> TracebackType | None:
    """The part of ``tb`` below Hydra's ``run_and_report`` frame: where Hydra's own report starts."""
    below, t = None, tb
    while t is not None:
        if t.tb_frame.f_code is report.__code__:
            below = t.tb_next
        t = t.tb_next
    return below or tb


def _hydra_report(error: Exception) -> NoReturn:
    """Print ``error`` as Hydra prints it without HYDRA_FULL_ERROR (compact, or trimmed to the job), exit 1."""
    from hydra._internal.utils import run_and_report

    trimmed = error.with_traceback(_below_hydra(error.__traceback__, run_and_report))

    def again() -> NoReturn:
        raise trimmed

    os.environ.pop("HYDRA_FULL_ERROR", None)
    run_and_report(again)
    raise error  # run_and_report exits; this is never reached


def run_reporting_submission_errors(main: Callable[[], Any]) -> int:
    """Run Hydra's ``main`` so that a sweep the cluster refuses ends in one line and status 2, not a traceback.

    Hydra prints any exception of a run or sweep itself and exits (``run_and_report``), unless
    HYDRA_FULL_ERROR is set; it is set here so the exception gets back to this process, which turns sbatch's
    refusal (submitit's FailedJobError from sbatch's CalledProcessError) into one line and hands any other
    error back to Hydra's report, printed as before. Jobs never read the variable: only ``run_and_report``
    does, in the launching process. A user who sets HYDRA_FULL_ERROR gets every traceback, as asked.
    """
    before = os.environ.get("HYDRA_FULL_ERROR")
    if before == "1":
        main()
        return 0
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as e:
        line = submission_error(e) or write_error(e)
        if line is None:
            _hydra_report(e)
        print(line, file=sys.stderr, flush=True)
        return 2
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before
    return 0
