"""W&B tracking: the mode is the run's own, never the process's, so later jobs of a sweep don't inherit it."""

from __future__ import annotations

import os
from pathlib import Path

from agent_safety.records.tracking import start


def _logger(mode: str) -> dict[str, object]:
    return {"backend": "wandb", "mode": mode, "project": "agent-safety-test", "entity": None}


def test_start_leaves_the_environment_alone_and_honours_each_runs_mode(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest forces offline through the env; no key is set
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    before = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # wandb's own, for child processes
    offline = start(_logger("offline"), tmp_path / "a", "run-a", "g", "S", [], {"seed": 0})
    try:
        assert offline.run is not None and offline.run.settings.mode == "offline"
        # nothing leaks to the next job of an in-process sweep (WANDB_SERVICE is wandb's own, for child processes)
        assert {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} == before
    finally:
        offline.finish(0)
    assert list((tmp_path / "a").glob("wandb/offline-run-*"))  # written offline, where the run dir is
    disabled = start(_logger("disabled"), tmp_path / "b", "run-b", "g", "S", [], {"seed": 0})
    try:
        assert disabled.run is not None and disabled.run.settings.mode == "disabled" and disabled.run.disabled
        assert "WANDB_MODE" not in os.environ and not (tmp_path / "b" / "wandb").exists()
    finally:
        disabled.finish(0)
