"""Evaluation settings in the run dir: one result set per setting, aggregate fits one, old run dirs migrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose, stage_records
from test_aggregate import make_runs
from test_aggregate import stage_records as fake_records

from agent_safety.aggregate import report as aggregate
from agent_safety.config.schema import to_container
from agent_safety.records.collect import collect
from agent_safety.records.identity import default_eval_id, eval_id, run_id
from agent_safety.records.migrate import migrate
from agent_safety.records.rundir import RunDir
from agent_safety.run.schedule import run_schedule

QUICK = ["trainer.max_steps=3", "trainer.max_pairs=12", "eval.max_cases=6", "logger=none"]


def _legacy_run(runs: Path, overrides: list[str]) -> RunDir:
    """A completed run dir as version 1 wrote it: records in metrics.jsonl at the top, its config beside."""
    config = to_container(compose(overrides))
    rd = RunDir(runs / "single" / run_id(config))
    rd.root.mkdir(parents=True)
    rd.write_config(config)
    stages = config["schedule"]["stages"]
    recs = fake_records(rd.root.name, "single", "tiny", config["schedule"]["name"], 0, 0.1, (1.0, 2.0))
    for rec in recs[1:]:
        rec["train_loss"] = 0.5
        (rd.model_dir(rec["stage"])).mkdir(parents=True)
        (rd.model_dir(rec["stage"]) / "config.json").write_text("{}")
    assert len(recs) == len(stages) + 1
    rd.legacy_metrics_path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rd.set_status("completed", run_id=rd.root.name)
    return rd


def test_a_version_1_run_dir_is_read_and_migrated_in_place(tmp_path: Path) -> None:
    rd = _legacy_run(tmp_path / "runs", ["schedule=S_H"])
    c = collect([tmp_path / "runs"])
    assert len(c.table) == 3 and set(c.table["eval_id"]) == {default_eval_id()}
    m = migrate(tmp_path / "runs")
    assert m.migrated == 1 and not m.moved and not rd.is_legacy()
    ev = rd.eval(default_eval_id())
    assert ev.completed() and ev.evaluated_stages() == [0, 1, 2]
    assert rd.trained_stages() == [1, 2] and rd.training_record(1)["train_loss"] == 0.5
    again = collect([tmp_path / "runs"])
    assert again.table.drop(columns="eval_name").equals(c.table.drop(columns="eval_name"))


def test_a_version_1_run_scored_with_other_settings_moves_to_its_training_id(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = to_container(compose(["schedule=S", "eval.per_token=true"]))
    old = RunDir(runs / "single" / "0123456789")  # the id version 1 gave it hashed the estimate's settings
    legacy = _legacy_run(tmp_path / "elsewhere", ["schedule=S", "eval.per_token=true"])
    old.root.parent.mkdir(parents=True)
    legacy.root.rename(old.root)
    assert migrate(runs, dry_run=True).moved == [(str(old.root), str(runs / "single" / run_id(config)))]
    assert old.is_legacy()  # a dry run changes nothing
    m = migrate(runs)
    new = RunDir(runs / "single" / run_id(config))
    assert m.moved == [(str(old.root), str(new.root))] and not old.root.exists()
    assert {r["run_id"] for r in new.eval(eval_id(config)).records()} == {new.root.name}
    assert new.status()["migrated_from"] == "0123456789"


def test_a_launch_migrates_its_own_version_1_run_dir_and_trains_nothing(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("schedule=S", *QUICK)
    rd = _legacy_run(Path(cfg.paths.runs_dir), ["schedule=S", *QUICK])
    result = run_schedule(cfg)
    assert result.skipped_training and not rd.is_legacy()
    assert [r["stage"] for r in result.records] == [0, 1]


def test_aggregate_fits_one_evaluation_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    make_runs(runs)
    other = RunDir(runs / "sweep" / "tiny-S-0-0.1").eval("other123")  # the same run scored a second way
    for rec in fake_records("tiny-S-0-0.1", "sweep", "tiny", "S", 0, 0.1, (2.5, 0.5)):
        other.write_record({**rec, "eval_id": "other123", "eval_name": "mine"})
    other.set_status("completed")
    default = aggregate.run_aggregate([runs], tmp_path / "a", n_boot=5, figures=False)
    assert set(default.collection.table["eval_id"]) == {default_eval_id()}
    assert default.evaluation["left_out"] == {"other123": {"name": "mine", "records": 2}}
    picked = aggregate.run_aggregate([runs], tmp_path / "b", n_boot=5, figures=False, evaluation="mine")
    assert set(picked.collection.table["eval_id"]) == {"other123"} and len(picked.collection.table) == 2
    assert set(picked.collection.cases["row"]) <= set(range(2))
    assert json.loads((tmp_path / "b" / "frontier.json").read_text())["evaluation"]["id"] == "other123"
    assert "eval_id" in (tmp_path / "b" / "runs.csv").read_text().splitlines()[0]
    with pytest.raises(SystemExit, match="no such evaluation setting"):
        aggregate.run_aggregate([runs], tmp_path / "c", n_boot=5, figures=False, evaluation="nope")


def test_several_settings_and_no_default_is_a_clear_error(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i, eid in enumerate(("aaaa1111", "bbbb2222")):
        rd = RunDir(runs / "g" / f"r{i}")
        ev = rd.eval(eid)
        for rec in fake_records(f"r{i}", "g", "tiny", "S", 0, 0.1, (1.0, 2.0)):
            ev.write_record({**rec, "eval_id": eid, "eval_name": f"n{i}"})
        ev.set_status("completed")
        rd.set_status("completed")
    with pytest.raises(SystemExit, match=r"records of 2 evaluation settings: aaaa1111 \(n0, 2 records\), "
                                         r"bbbb2222 \(n1, 2 records\); pick one with --eval"):
        aggregate.run_aggregate([runs], tmp_path / "out", n_boot=5, figures=False)


@pytest.mark.slow
def test_another_evaluation_setting_scores_a_completed_run_and_trains_nothing(make_cfg) -> None:
    first = run_schedule(make_cfg("schedule=S_H", *QUICK))
    model = first.run_dir / "stage_2" / "model" / "model.safetensors"
    before = model.stat().st_mtime_ns
    second = run_schedule(make_cfg("schedule=S_H", *QUICK, "eval.per_token=true", "eval.name=per-token"))
    assert second.run_id == first.run_id and model.stat().st_mtime_ns == before
    assert not second.skipped_training and [r["stage"] for r in second.records] == [0, 1, 2]
    rd = RunDir(first.run_dir)
    assert len(rd.evals()) == 2 and all(ev.completed() for ev in rd.evals())
    assert rd.config()["eval"]["per_token"] is False  # the snapshot is what trained it; eval.yaml says the rest
    ids = {r["eval_id"] for r in second.records}
    assert ids == {rd.evals()[0].eval_id} ^ {rd.evals()[1].eval_id} ^ {first.records[0]["eval_id"]}
    assert second.records[0]["safety"] == first.records[0]["safety"]  # the base: equal weights either way
    assert [r["pairs_used"] for r in second.records] == [r["pairs_used"] for r in first.records]
    again = run_schedule(make_cfg("schedule=S_H", *QUICK, "eval.per_token=true"))
    assert again.skipped_training
    with pytest.raises(ValueError):
        stage_records(first.run_dir)  # two settings: the helper refuses to guess
