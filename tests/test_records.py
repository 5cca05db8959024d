"""Run identity, secret redaction, atomic records."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import compose

from agent_safety.config.schema import to_container
from agent_safety.records.identity import run_id
from agent_safety.records.rundir import REDACTED, RunDir, redact
from agent_safety.store.io import replace_dir


def test_run_id_ignores_non_semantic_keys() -> None:
    a = to_container(compose(["paths.runs_dir=/a", "logger=none", "group=x", "threads=1"]))
    b = to_container(compose(["paths.runs_dir=/b", "group=y", "force=true"]))
    assert run_id(a) == run_id(b)


def test_run_id_changes_with_meaningful_keys() -> None:
    base = run_id(to_container(compose([])))
    for override in ["seed=1", "trainer.beta=0.05", "schedule=H_S", "objectives.safety.min_margin=1"]:
        assert run_id(to_container(compose([override]))) != base, override
    sh = run_id(to_container(compose(["schedule=SH"])))
    assert run_id(to_container(compose(["schedule=SH", "objectives.both.mode=average"]))) != sh


def test_redact_names_and_values(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-value-123")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh")
    data = {"logger": {"api_key": "x"}, "note": "key=wandb-secret-value-123", "list": ["hf_abcdefgh"],
            "token_count": 3, "hf_token": None}
    out = redact(data)
    assert out["logger"]["api_key"] == REDACTED
    assert "wandb-secret" not in json.dumps(out) and "hf_abcdefgh" not in json.dumps(out)
    assert out["token_count"] == 3 and out["hf_token"] is None
    kept = {"eval": {"per_token": True, "max_tokens": 9}, "api_key_env": "OPENAI_API_KEY", "token": "abc"}
    assert redact(kept) == {"eval": {"per_token": True, "max_tokens": 9}, "api_key_env": "OPENAI_API_KEY",
                            "token": REDACTED}


def test_secret_from_env_never_reaches_config_snapshot(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-1234567890")
    cfg = compose([])
    rd = RunDir(tmp_path / "run")
    rd.write_config({**to_container(cfg), "extra": {"openai_api_key": "sk-test-1234567890"}})
    rd.set_status("failed", error="bad key sk-test-1234567890")
    for f in (rd.root / "config.yaml", rd.status_path):
        assert "sk-test-1234567890" not in f.read_text()


def test_stage_records_replace_and_order(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    ev = rd.eval("e1")
    ev.write_record({"stage": 1, "safety": 1.0})
    ev.write_record({"stage": 0, "safety": 0.5})
    ev.write_record({"stage": 1, "safety": 2.0})
    assert [(r["stage"], r["safety"]) for r in ev.records()] == [(0, 0.5), (1, 2.0)]
    assert ev.evaluated_stages() == [0, 1] and rd.trained_stages() == []
    rd.write_training_record({"stage": 1, "pairs_used": 3})
    assert rd.trained_stages() == []  # stage 1 has no saved model yet
    (rd.model_dir(1)).mkdir(parents=True)
    (rd.model_dir(1) / "config.json").write_text("{}")
    assert rd.trained_stages() == [1]
    assert [e.eval_id for e in rd.evals()] == ["e1"] and rd.training_record(1) == {"stage": 1, "pairs_used": 3}
    assert not list(tmp_path.glob(".*")) and not list(ev.root.glob(".*"))  # no temporary files left behind


def test_nested_non_semantic_keys_are_dropped() -> None:
    a = to_container(compose(["model=phi-4", "model.gpu_hours_per_kpair=1.0", "eval.batch_size=2"]))
    b = to_container(compose(["model=phi-4"]))
    assert run_id(a) == run_id(b)


class Killed(BaseException):
    """A job killed mid-call: like SIGKILL, nothing after it in replace_dir should be relied on."""


def _fill(text: str):
    return lambda d: (Path(d) / "weights.txt").write_text(text)


def _fails(d: Path) -> None:
    raise OSError("disk full")


def test_replace_dir_killed_between_renames_keeps_the_old_folder(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model"
    replace_dir(target, _fill("old"))
    real_replace = os.replace

    def killed_on_rename_in(src, dst, *a, **k):  # the new folder's rename into place never happens
        if Path(dst) == target:
            raise Killed
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", killed_on_rename_in)
    with pytest.raises(Killed):
        replace_dir(target, _fill("new"))
    monkeypatch.undo()
    kept = [p for p in tmp_path.rglob("weights.txt") if p.read_text() == "old"]
    assert kept, "the old folder was deleted before the new one was in place"
    # the relaunched job's save fails too: the old folder is back in place, whole
    with pytest.raises(OSError, match="disk full"):
        replace_dir(target, _fails)
    assert (target / "weights.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replace_dir_killed_before_dropping_the_old_folder_keeps_the_new_one(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model"
    replace_dir(target, _fill("old"))
    real_rmtree = shutil.rmtree

    def killed_on_cleanup(path, *a, **k):  # killed while deleting the old folder, once the new one is in
        if (target / "weights.txt").exists() and (target / "weights.txt").read_text() == "new":
            raise Killed
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", killed_on_cleanup)
    with pytest.raises(Killed):
        replace_dir(target, _fill("new"))
    monkeypatch.undo()
    assert (target / "weights.txt").read_text() == "new"
    replace_dir(target, _fill("newer"))
    assert (target / "weights.txt").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the leftover old folder is gone


def test_a_broken_record_line_is_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.write_training_record({"stage": 1, "pairs_used": 3})
    with rd.stages_path.open("a") as f:
        f.write('{"stage": 2, "pairs_u\n')  # a line cut short by hand or by a full disk
    with pytest.raises(ValueError) as e:
        rd.training_records()
    assert str(e.value).startswith(f"{rd.stages_path}:2: not a JSON record (") and "\n" not in str(e.value)
    rd.status_path.write_text('{"status": ')
    assert rd.status_problem() is not None and str(rd.status_path) in rd.status_problem()
