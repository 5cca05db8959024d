"""The run directory: config snapshot, status, trained stages, and one result set per evaluation setting.

```
runs/<group>/<run_id>/
  config.yaml  status.json  stages.jsonl      the run: its config, its status, one line per trained stage
  stage_<k>/model/  stage_<k>/adapter/        the merged model after stage k (trainer.save_merged), its LoRA adapter
  stage_<k>/stacked/                          stages 1..k as one LoRA adapter over the base (train.stacked)
  eval/<eval_id>/eval.yaml  metrics.jsonl  status.json    one evaluation setting: one stage record per stage
```

The run id names what was trained and the eval id how it was scored (``records.identity``), so scoring a
run another way trains nothing. Every file is written atomically, and a status says ``completed`` only
after everything it covers is on disk. Run dirs written before evaluation had its own folder hold their
records in ``metrics.jsonl`` at the top; :meth:`RunDir.migrate_legacy` moves them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from agent_safety.store.io import atomic_write, read_json

SECRET_ENV = ("WANDB_API_KEY", "OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ANTHROPIC_API_KEY")
#: Config keys that hold secrets (``api_key``, ``hf_token``, ``client_secret``), not ones that merely end in
#: a word like them (``eval.per_token``, ``max_tokens``).
_SECRET_KEY = re.compile(r"(^|_)(api[_-]?key|secret|password)$|^((hf|api|access|auth|bearer|refresh)_)?token$", re.I)
REDACTED = "***"
log = logging.getLogger(__name__)
#: Training facts of a stage, kept in ``stages.jsonl`` and copied into each of its stage records.
TRAINING_FIELDS = ("pairs_used", "pairs_dropped", "train_loss", "trained_by")
#: The files of a LoRA adapter folder, as PEFT names them (a stage's ``stacked/`` is one).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class RecordError(ValueError):
    """A run dir's record is missing or unreadable: the message names the file and how to recover."""


def redact(obj: Any, secrets: tuple[str, ...] | None = None) -> Any:
    """Copy of ``obj`` with secret-named keys and any value holding a secret from the env replaced."""
    if secrets is None:
        secrets = tuple(v for k in SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 4)
    if isinstance(obj, Mapping):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and obj[k] else redact(obj[k], secrets)
                for k in obj}
    if isinstance(obj, list | tuple):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, REDACTED)
    return obj


def timestamp() -> str:
    """Local time as status.json and the records write it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line that is not JSON is a one-line error naming the file and line."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise RecordError(f"{path}:{n}: not a JSON record ({e.msg})") from None
    return rows


def _replace_line(path: Path, record: Mapping[str, Any]) -> None:
    """Replace the line of ``record["stage"]`` (a resumed stage rewrites it), keep the others, atomically."""
    rows = [r for r in _read_lines(path) if r.get("stage") != record["stage"]] + [dict(record)]
    rows.sort(key=lambda r: r["stage"])
    atomic_write(path, "".join(json.dumps(redact(r), sort_keys=True) + "\n" for r in rows))


class _Status:
    """A ``status.json`` beside the files it vouches for."""

    root: Path

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    def status(self) -> dict[str, Any]:
        """The status, or {} (an unfinished run) when the file is missing or unreadable: a relaunch resumes
        from the records beside it (stages.jsonl, metrics.jsonl) and rewrites it, training nothing twice."""
        problem = self.status_problem()
        if problem is not None:
            log.warning("%s: unreadable (%s): read as an unfinished run; relaunching it resumes it and rewrites "
                        "the file", self.status_path, problem)
            return {}
        return read_json(self.status_path, {}) or {}

    def status_problem(self) -> str | None:
        """Why ``status.json`` cannot be read (None if it can, or is missing)."""
        try:
            data = read_json(self.status_path, {})
        except (OSError, ValueError) as e:
            return f"{type(e).__name__}: {e}"
        return None if isinstance(data, dict) else f"not a JSON object: {type(data).__name__}"

    def set_status(self, status: str, **extra: Any) -> None:
        data = {**self.status(), "status": status, "updated": timestamp(), **extra}
        if status != "failed":
            data["error"] = None
        atomic_write(self.status_path, json.dumps(redact(data), indent=1, sort_keys=True) + "\n")


class EvalDir(_Status):
    """One evaluation setting's results for a run: ``<run dir>/eval/<eval_id>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def eval_id(self) -> str:
        return self.root.name

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def records(self) -> list[dict[str, Any]]:
        return _read_lines(self.metrics_path)

    def write_record(self, record: Mapping[str, Any]) -> None:
        _replace_line(self.metrics_path, record)

    def evaluated_stages(self) -> list[int]:
        return sorted(r["stage"] for r in self.records())

    def write_setting(self, setting: Mapping[str, Any]) -> None:
        atomic_write(self.root / "eval.yaml", yaml.safe_dump(redact(dict(setting)), sort_keys=False))

    def completed(self) -> bool:
        return self.status().get("status") == "completed"


class RunDir(_Status):
    """Paths and atomic writers of one run's directory: ``runs/<group>/<run_id>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def stages_path(self) -> Path:
        return self.root / "stages.jsonl"

    @property
    def legacy_metrics_path(self) -> Path:
        """Where run dirs written before ``eval/`` kept their stage records."""
        return self.root / "metrics.jsonl"

    @property
    def lock_path(self) -> Path:
        """Beside the run dir, not in it: ``force=true`` deletes the run dir under the lock."""
        return self.root.with_name(f".{self.root.name}.lock")

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Hold the run's file lock for the block; yields whether another job held it first (this one waited).

        Where the file system cannot lock, warns and goes on unlocked (as shared stages do)."""
        from filelock import FileLock, Timeout

        lock = FileLock(self.lock_path)
        waited = False
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                waited = True
                log.warning("run %s is being run by another job: waiting for it to finish", self.root.name)
                print(f"[{self.root.name}] another job is running this run: waiting for it", flush=True)
                lock.acquire()
        except OSError as e:
            log.warning("cannot lock %s (%s): going on without it", self.lock_path, e)
            yield waited
            return
        try:
            yield waited
        finally:
            lock.release()

    def stage_dir(self, stage: int) -> Path:
        return self.root / f"stage_{stage}"

    def model_dir(self, stage: int) -> Path:
        return self.stage_dir(stage) / "model"

    def adapter_dir(self, stage: int) -> Path:
        return self.stage_dir(stage) / "adapter"

    def stacked_dir(self, stage: int) -> Path:
        """Stages 1..k as one adapter over the base model: what the stage is without its merged model."""
        return self.stage_dir(stage) / "stacked"

    def has_merged(self, stage: int) -> bool:
        return (self.model_dir(stage) / "config.json").exists()

    def has_stacked(self, stage: int) -> bool:
        return (self.stacked_dir(stage) / ADAPTER_CONFIG).exists()

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write(self.root / "config.yaml", yaml.safe_dump(redact(dict(config)), sort_keys=False))

    def config(self) -> dict[str, Any]:
        path = self.root / "config.yaml"
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}

    # -- training
    def training_records(self) -> list[dict[str, Any]]:
        return _read_lines(self.stages_path)

    def training_record(self, stage: int) -> dict[str, Any] | None:
        return next((r for r in self.training_records() if r["stage"] == stage), None)

    def write_training_record(self, record: Mapping[str, Any]) -> None:
        """Written once the stage's model (merged, or its stacked adapter) is on disk: the line says the stage is
        trained."""
        _replace_line(self.stages_path, record)

    def trained_stages(self) -> list[int]:
        """Stages (from 1) with a training line and a saved model: merged, or as its stacked adapter."""
        return sorted(r["stage"] for r in self.training_records()
                      if self.has_merged(r["stage"]) or self.has_stacked(r["stage"]))

    # -- evaluation
    def eval(self, eval_id: str) -> EvalDir:
        return EvalDir(self.root / "eval" / eval_id)

    def evals(self) -> list[EvalDir]:
        base = self.root / "eval"
        return [EvalDir(p) for p in sorted(base.iterdir()) if p.is_dir()] if base.is_dir() else []

    def is_legacy(self) -> bool:
        return self.legacy_metrics_path.exists()

    def migrate_legacy(self, eval_id: str, setting: Mapping[str, Any]) -> None:
        """Move a version-1 run dir's ``metrics.jsonl`` into ``eval/<eval_id>/`` and ``stages.jsonl``.

        Each step is atomic and idempotent, and the old file goes last, so a killed migration is redone."""
        records = _read_lines(self.legacy_metrics_path)
        ev = self.eval(eval_id)
        for rec in records:
            if rec["stage"] > 0 and self.training_record(rec["stage"]) is None:
                self.write_training_record({"stage": rec["stage"], "objectives": rec.get("objectives", []),
                                            **{k: rec.get(k) for k in TRAINING_FIELDS}})
        for rec in records:
            ev.write_record({**rec, "eval_id": eval_id, "eval_name": setting.get("name", "estimate")})
        ev.write_setting(setting)
        if self.status().get("status") == "completed":
            ev.set_status("completed", eval_id=eval_id, stages=len(records))
        os.unlink(self.legacy_metrics_path)
