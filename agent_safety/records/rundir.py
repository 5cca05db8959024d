"""Run identity and the run directory: config snapshot, status, per-stage metrics, checkpoints.

A run's id is a short hash of its resolved config minus the keys that do not change what it computes
(paths, logging, launcher, hardware), so an identical config maps to the same run dir and is not
trained twice. Every file is written atomically, and ``status.json`` says ``completed`` only after
everything else is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agent_safety.config.schema import NON_SEMANTIC_KEYS
from agent_safety.records.io import atomic_write, read_json

SECRET_ENV = ("WANDB_API_KEY", "OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ANTHROPIC_API_KEY")
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password)$", re.I)
REDACTED = "***"


def semantic_config(config: Mapping[str, Any], drop: tuple[str, ...] = NON_SEMANTIC_KEYS) -> dict[str, Any]:
    """The config without the (dotted) keys that do not change what a run computes."""
    out = {}
    for key, value in config.items():
        if key in drop:
            continue
        nested = tuple(d.split(".", 1)[1] for d in drop if d.startswith(f"{key}."))
        out[key] = semantic_config(value, nested) if nested and isinstance(value, Mapping) else value
    return out


def run_id(config: Mapping[str, Any]) -> str:
    """Short hash of the semantic part of a resolved config."""
    blob = json.dumps(semantic_config(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


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


class RunDir:
    """Paths and atomic writers of one run's directory: ``runs/<group>/<run_id>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def stage_dir(self, stage: int) -> Path:
        return self.root / f"stage_{stage}"

    def model_dir(self, stage: int) -> Path:
        return self.stage_dir(stage) / "model"

    def status(self) -> dict[str, Any]:
        return read_json(self.status_path, {}) or {}

    def set_status(self, status: str, **extra: Any) -> None:
        data = {**self.status(), "status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        if status != "failed":
            data["error"] = None
        atomic_write(self.status_path, json.dumps(redact(data), indent=1, sort_keys=True) + "\n")

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write(self.root / "config.yaml", yaml.safe_dump(redact(dict(config)), sort_keys=False))

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line]

    def write_stage_metrics(self, record: Mapping[str, Any]) -> None:
        """Replace this stage's line (a resumed stage rewrites it) and keep the others, atomically."""
        rows = [r for r in self.metrics() if r.get("stage") != record["stage"]] + [dict(record)]
        rows.sort(key=lambda r: r["stage"])
        atomic_write(self.metrics_path, "".join(json.dumps(redact(r), sort_keys=True) + "\n" for r in rows))

    def completed_stages(self) -> list[int]:
        """Stages with a metrics line and, after the base, a saved merged model."""
        return sorted(r["stage"] for r in self.metrics()
                      if r["stage"] == 0 or (self.model_dir(r["stage"]) / "config.json").exists())
