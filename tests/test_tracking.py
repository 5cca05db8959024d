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


def test_stage_scores_reach_wandb_under_the_evaluations_name_with_the_changes_in_the_summary(tmp_path: Path) -> None:
    """Each stage's scores as ``eval/<name>/*`` against ``stage``; the summary holds every stage's scores and
    their change from the base, so a group's runs table is its results table."""
    import json

    from wandb_files import offline_runs, records

    from agent_safety.run.schedule import summary_scores

    stages = [{"stage": 0, "safety": 2.5, "helpfulness": 1.0}, {"stage": 1, "safety": 2.75, "helpfulness": 0.5},
              {"stage": 2, "safety": 2.0, "helpfulness": 1.25}]
    tracker = start(_logger("offline"), tmp_path, "run-c", "g", "S_H", [], {"seed": 0})
    for rec in stages:
        tracker.log({"stage": rec["stage"], "eval/generative/safety": rec["safety"],
                     "eval/generative/helpfulness": rec["helpfulness"]})
    tracker.summary(summary_scores(stages, "generative"))
    tracker.finish(0)
    (run_file,) = offline_runs(tmp_path)
    got = list(records(run_file))
    steps = {m.name or m.glob_name: m.step_metric for r in got if r.WhichOneof("record_type") == "metric"
             for m in [r.metric]}
    assert steps["eval/*"] == "stage" and steps["train/*"] == "train/global_step"
    summary = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
               for r in got if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert summary["eval/generative/stage_1/delta_safety"] == 0.25
    assert summary["eval/generative/stage_2/delta_helpfulness"] == 0.25
    assert (summary["final/delta_safety"], summary["final/delta_helpfulness"]) == (-0.5, 0.25)
    assert summary["eval/generative/stage_0/safety"] == 2.5 and "eval/generative/stage_0/delta_safety" not in summary
