"""End to end on the tiny model and the synthetic benchmark: real TRL/PEFT training, real records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, pinned, run_log, stage_records

from agent_safety.config.schema import to_container
from agent_safety.records.identity import eval_id
from agent_safety.run.schedule import run_dir_for, run_schedule

#: A few steps per stage: enough to write every record, quick enough to run each preset.
QUICK = ["trainer.max_steps=4", "trainer.max_pairs=16", "eval.max_cases=8", "logger=none"]


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["S", "H", "S_H", "H_S", "SH"])
def test_each_preset_runs_and_writes_records(make_cfg, schedule: str) -> None:
    cfg = make_cfg(f"schedule={schedule}", *QUICK)
    result = run_schedule(cfg)
    stages = list(cfg.schedule.stages)
    rd = result.run_dir
    assert json.loads((rd / "status.json").read_text())["status"] == "completed"
    rows = stage_records(rd)
    assert [r["stage"] for r in rows] == list(range(len(stages) + 1))
    assert rows[-1]["objectives"] == stages and rows[0]["objectives"] == []
    for r in rows:
        assert 0 <= r["safety"] <= 3 and 0 <= r["helpfulness"] <= 3
        assert r["n_test_cases"] == 8 and r["schedule"] == schedule and r["run_id"] == result.run_id
    assert all(r["pairs_used"] > 0 for r in rows[1:])
    for k in range(1, len(stages) + 1):
        assert (rd / f"stage_{k}" / "model" / "model.safetensors").exists()
        assert (rd / f"stage_{k}" / "adapter" / "adapter_model.safetensors").exists()
    assert (rd / "config.yaml").exists()


@pytest.mark.slow
def test_safety_stage_raises_safety_and_helpfulness_stage_raises_helpfulness(make_cfg) -> None:
    s = run_schedule(make_cfg("schedule=S", "trainer.max_pairs=96", "logger=none")).records
    h = run_schedule(make_cfg("schedule=H", "trainer.max_pairs=96", "logger=none")).records
    assert s[0]["safety"] == pytest.approx(h[0]["safety"])  # same base estimate, cached once
    assert s[1]["safety"] > s[0]["safety"] + 0.05
    assert h[1]["helpfulness"] > h[0]["helpfulness"] + 0.05
    assert s[1]["pref_acc_safety"] > 0.6 and h[1]["pref_acc_helpfulness"] > 0.6


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.slow
def test_second_stage_starts_from_first_and_uses_it_as_reference(make_cfg, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, TrainerCallback

    from agent_safety.data.benchmark import load_data
    from agent_safety.pairs.formatting import tokenize_benchmark
    from agent_safety.pairs.rules import PairRule, build_pairs
    from agent_safety.pairs.sets import pair_rows
    from agent_safety.train.models import load_tokenizer, resolve_base
    from agent_safety.train.stage import train_stage

    cfg = make_cfg("schedule=S", *QUICK)
    result = run_schedule(cfg)
    bench = load_data(cfg.data, cfg.paths.cache_dir)
    base_path, _ = resolve_base(cfg.model, bench, cfg.paths.cache_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    stage1 = AutoModelForCausalLM.from_pretrained(result.run_dir / "stage_1" / "model")
    ids = torch.arange(5, 40)[None]
    assert not torch.allclose(_logits(base, ids), _logits(stage1, ids))  # stage 1 trained something

    seen: dict[str, torch.Tensor] = {}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            if "ref" not in seen:
                with model.disable_adapter():
                    seen["ref"] = _logits(model, ids)

    tok = load_tokenizer(base_path, cfg.model)
    tokenized = tokenize_benchmark(tok, bench)
    pairs = build_pairs(bench.trajectories, PairRule.from_config(cfg.objectives.helpfulness))
    rows = pair_rows(pairs[:8], bench, tokenized, cfg.trainer.max_length)
    merged, _ = train_stage(stage1, tok, rows, cfg.trainer, tmp_path / "stage_2", 1, 0, [], "probe",
                            callbacks=[Probe()])
    fresh_stage1 = AutoModelForCausalLM.from_pretrained(result.run_dir / "stage_1" / "model")
    assert torch.allclose(seen["ref"], _logits(fresh_stage1, ids), atol=1e-5)
    assert not torch.allclose(seen["ref"], _logits(base, ids))
    assert not torch.allclose(_logits(merged, ids), _logits(fresh_stage1, ids))


@pytest.mark.slow
def test_rerun_of_completed_config_does_no_training(make_cfg) -> None:
    cfg = make_cfg("schedule=S", *QUICK)
    first = run_schedule(cfg)
    (metrics,) = first.run_dir.glob("eval/*/metrics.jsonl")
    before = metrics.stat().st_mtime_ns
    again = run_schedule(cfg)
    assert again.skipped_training and again.run_id == first.run_id
    assert metrics.stat().st_mtime_ns == before
    forced = run_schedule(make_cfg("schedule=S", *QUICK, "force=true"))
    assert not forced.skipped_training and forced.run_id == first.run_id


@pytest.mark.slow
def test_killed_run_resumes_from_last_completed_stage(make_cfg, tmp_path: Path, cache_dir: Path) -> None:
    overrides = ["schedule=S_H", "trainer.max_steps=20", "trainer.max_pairs=80", "trainer.save_steps=1000",
                 "eval.max_cases=8",
                 "logger=none", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={cache_dir}", "threads=1"]
    _, rd, _ = run_dir_for(make_cfg(*overrides[:-3]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *pinned(overrides)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stage1 = rd.model_dir(1) / "config.json"
    ev = rd.eval(eval_id(to_container(make_cfg(*overrides[:-3]))))

    def stage1_done() -> bool:  # trained and evaluated
        return 1 in rd.trained_stages() and 1 in ev.evaluated_stages()

    deadline = time.time() + 300
    while not stage1_done() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert stage1_done(), "stage 1 never completed"
    time.sleep(1.0)  # into stage 2's training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(rd.status_path.read_text())["status"] == "running"  # killed: never marked completed
    assert rd.trained_stages() == [1] and [r["stage"] for r in stage_records(rd.root)] == [0, 1]
    stage1_mtime = stage1.stat().st_mtime_ns
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *pinned(overrides)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(rd.status_path.read_text())["status"] == "completed"
    assert [r["stage"] for r in stage_records(rd.root)] == [0, 1, 2]
    assert stage1.stat().st_mtime_ns == stage1_mtime  # stage 1 was not trained again


@pytest.mark.slow
def test_a_run_prints_its_header_and_results_and_library_output_goes_to_its_log(tmp_path: Path,
                                                                                cache_dir: Path) -> None:
    """The default schedule (S_H) with W&B on (offline), as a user's terminal gets it (no WANDB_SILENT, no
    TQDM_DISABLE): the header, one line per stage, the run dir, and nothing a library printed; warnings,
    W&B's lines and the Trainer's log dicts are in the run's run.log. A rerun prints the same results again."""
    overrides = ["trainer.max_steps=3", "trainer.max_pairs=12", "eval.max_cases=6", "threads=1",
                 f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={cache_dir}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "TQDM_DISABLE")}
    env["WANDB_MODE"] = "offline"

    def launch() -> tuple[list[str], list[str]]:
        done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *pinned(overrides)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.splitlines(), done.stderr.splitlines()

    out, err = launch()
    rid = out[0][1:11]
    own = (f"[{rid}] ", " " * (len(rid) + 3), "building the tiny model once into ")
    assert [line for line in out + err if not line.startswith(own)] == []  # no library line on the terminal
    assert out[0].startswith(f"[{rid}] model=tiny data=synthetic schedule=S_H (safety, helpfulness)")
    assert any(line.strip().startswith("evaluation: estimate") for line in out[:3])
    stages = [line for line in out if line.startswith(f"[{rid}] stage ")]
    assert [line.split(":")[0] for line in stages] == [f"[{rid}] stage 0 (base)", f"[{rid}] stage 1 (safety)",
                                                       f"[{rid}] stage 2 (helpfulness)"]
    run_dir = tmp_path / "runs" / "single" / rid
    assert out[-1] == f"[{rid}] completed: run dir {run_dir}"
    log = run_log(run_dir)
    assert "first training step" in log and "train_runtime" in log  # the project's info lines, the Trainer's dict
    again, again_err = launch()
    assert [line for line in again if line.startswith(f"[{rid}] stage ")] == stages and again_err == []
    assert f"[{rid}] already completed, nothing to do (force=true reruns it)" in again
    assert run_log(run_dir) == log  # the rerun ran nothing
