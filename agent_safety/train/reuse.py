"""Stages shared between schedules: S_H's first stage is the whole of S, and H_S's is H.

The study trained its sequential runs from the single-stage models, and so does a sweep here: a stage's
identity is a hash of everything that decides it (the run's semantic config without the schedule, plus
the objectives of the stages up to it), so two runs with the same prefix train it once. The first job to
reach a stage takes a file lock on its identity and trains it; the others wait on the lock, then hard-link
its merged model into their own run dir and copy its record. A job that dies releases the lock, and the
next one trains the stage itself. ``reuse_stages=false`` (or ``force=true``) always trains.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent_safety.records.rundir import RunDir
from agent_safety.store.cache import locked
from agent_safety.store.io import atomic_write, read_json, replace_dir

log = logging.getLogger(__name__)

#: Where stage identities point at the run that trained them: ``<runs_dir>/.stages/<key>.json``.
INDEX = ".stages"


class SharedStage:
    """One stage identity under the lock: where it was trained, if it was, and how to say so."""

    def __init__(self, runs_dir: Path, stage_id: str, stage: int):
        self.path = runs_dir / INDEX / f"{stage_id}.json"
        self.runs_dir = runs_dir
        self.stage = stage

    def source(self) -> RunDir | None:
        """The run dir holding this stage's merged model and record, if it is still complete."""
        entry = read_json(self.path)
        if not entry:
            return None
        src = RunDir(self.runs_dir / entry["run_dir"])
        if self.stage not in src.trained_stages():
            return None
        return src

    def publish(self, rd: RunDir) -> None:
        atomic_write(self.path, json.dumps({"run_dir": str(rd.root.resolve().relative_to(self.runs_dir)),
                                            "stage": self.stage}) + "\n")


@contextmanager
def shared_stage(runs_dir: Path, stage_id: str, stage: int, enabled: bool = True) -> Iterator[SharedStage | None]:
    """Hold the stage's lock for the block: the caller adopts ``source()`` or trains and ``publish``es.

    Yields None (train, share nothing) when disabled or when the file system cannot lock.
    """
    if not enabled:
        yield None
        return
    runs_dir = runs_dir.resolve()
    with locked(runs_dir / INDEX / f"{stage_id}.lock") as ok:
        yield SharedStage(runs_dir, stage_id, stage) if ok else None


def adopt(src: RunDir, rd: RunDir, stage: int) -> dict[str, Any]:
    """Hard-link ``src``'s stage (merged model, adapter, stacked adapter) into ``rd`` and return its training
    record for ``rd``, marked with the run that trained it."""
    for part in ("adapter", "stacked", "model"):
        origin = src.stage_dir(stage) / part
        if origin.exists():
            link_tree(origin, rd.stage_dir(stage) / part)
    trained = src.training_record(stage) or {"stage": stage}
    return {**trained, "trained_by": trained.get("trained_by") or src.root.name}


def link_tree(src: Path, dst: Path) -> None:
    """Copy a folder as hard links (a copy across file systems), renamed into place whole."""
    replace_dir(dst, lambda tmp: shutil.copytree(src, tmp, copy_function=_link_or_copy, dirs_exist_ok=True))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
