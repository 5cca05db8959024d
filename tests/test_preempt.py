"""PreemptionGuard with real signals sent to this process, and the choice of the checkpoint to resume from."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from agent_safety.records.job import job_info
from agent_safety.train.callbacks import PreemptionGuard
from agent_safety.train.stage import latest_checkpoint

STATE = SimpleNamespace(global_step=7)


@pytest.fixture
def recorded() -> list[int]:
    """A USR2/TERM handler that records what reaches it, as submitit's would; restored afterwards."""
    seen: list[int] = []
    old = {s: signal.signal(s, lambda sig, frame: seen.append(sig)) for s in (signal.SIGUSR2, signal.SIGTERM)}
    yield seen
    for s, h in old.items():
        signal.signal(s, h)


def test_signal_during_steps_waits_for_the_checkpoint_then_reaches_the_displaced_handler(recorded) -> None:
    guard, control = PreemptionGuard(), TrainerControl()
    with guard:
        guard.on_train_begin(None, STATE, control)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)
        assert recorded == [] and sorted(guard.pending) == sorted([signal.SIGUSR2, signal.SIGTERM])
        guard.on_step_end(None, STATE, control)
        assert control.should_save  # the Trainer saves checkpoint-7 right after on_step_end
        guard.on_save(None, STATE, control)
        assert recorded == [signal.SIGTERM, signal.SIGUSR2]  # TERM first: submitit's USR2 handler exits
        assert guard.pending == []
    assert signal.getsignal(signal.SIGUSR2) is not guard._on_signal  # handlers restored


def test_signal_before_the_first_step_is_handed_over_at_once(recorded) -> None:
    guard = PreemptionGuard()
    with guard:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert recorded == [signal.SIGUSR2]


def test_default_action_becomes_a_clean_exit_after_the_checkpoint() -> None:
    old = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        guard, control = PreemptionGuard(), TrainerControl()
        with pytest.raises(SystemExit) as e, guard:
            guard.on_train_begin(None, STATE, control)
            os.kill(os.getpid(), signal.SIGUSR1)
            guard.on_step_end(None, STATE, control)
            guard.on_save(None, STATE, control)
        assert e.value.code == 128 + signal.SIGUSR1
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_resume_skips_a_checkpoint_cut_short(tmp_path: Path) -> None:
    for step, complete in ((2, True), (10, True), (12, False)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-11").mkdir()
    (tmp_path / "checkpoint-11" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert latest_checkpoint(tmp_path / "none") is None


def test_job_info_names_this_process() -> None:
    info = job_info()
    assert info["pid"] == os.getpid() and info["threads"] >= 1 and info["host"]
