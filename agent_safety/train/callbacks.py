"""Trainer callbacks of a stage: preemption-safe checkpoints and the time to the first step.

SLURM warns a job before it ends it: ``--signal=USR2@<signal_delay_s>`` before the time limit (submitit's
default signal; ``SUBMITIT_PREEMPT_SIGNAL`` changes it) and SIGTERM on preemption or ``scontrol requeue``.
submitit's USR2 handler requeues the job and exits at once, mid-step, so whatever the stage trained since its
last periodic checkpoint would be lost. :class:`PreemptionGuard` defers those signals to the end of the
current optimiser step, has the trainer save a checkpoint there, and only then hands the signal to the
handler it displaced (submitit's, or the default action). The requeued job resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from agent_safety.records.job import process_age

log = logging.getLogger(__name__)

#: Signals deferred to the end of the current training step; handled in this order once saved.
GUARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class PreemptionGuard(_trainer_callback_base()):  # type: ignore[misc]
    """Context manager and TrainerCallback: a warning signal during training saves a checkpoint first.

    Outside ``trainer.train()`` (and before its first step) signals go straight to the displaced handler;
    the run then resumes from its last completed stage and periodic checkpoint. In a thread other than the
    main one (where Python cannot install handlers) the guard does nothing.
    """

    def __init__(self, signals: tuple[int, ...] = GUARDED) -> None:
        self.signals = signals
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}
        self.in_steps = False

    # -- signal side
    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        previous, self.previous = self.previous, {}
        if self.pending and exc_type is None:  # arrived after the last step: hand it over now
            self._hand_over(previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.in_steps:
            log.warning("%s outside the training steps: handled now", name)
            self.pending.append(signum)
            self._hand_over(self.previous)
            return
        log.warning("%s during training: saving a checkpoint at the end of this step", name)
        self.pending.append(signum)

    def _hand_over(self, handlers: dict[int, Any]) -> None:
        """Run the displaced handlers of the pending signals (SIGTERM first, so submitit's USR2 requeue is last)."""
        pending, self.pending = sorted(set(self.pending), key=self.signals.index), []
        for sig in pending:
            handler: Callable[[int, FrameType | None], Any] | int | None = handlers.get(sig, signal.SIG_DFL)
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:  # the default action ends the process; exit cleanly instead
                raise SystemExit(128 + sig)

    # -- trainer side
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.in_steps = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.in_steps = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pending:
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pending:
            log.warning("checkpoint-%d saved; handing the signal over", state.global_step)
            self._hand_over(self.previous)


class FirstStep(_trainer_callback_base()):  # type: ignore[misc]
    """Logs when a stage's first optimiser step begins, counted from the process start: the job's overhead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen = False

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.seen:
            self.seen = True
            age = process_age()
            log.info("%s: first training step, %s s after the process started", self.name,
                     "?" if age is None else f"{age:.2f}")


class StepBar(_trainer_callback_base()):  # type: ignore[misc]
    """The training phase's progress bar with an ETA, on the terminal (``console.progress``); the Trainer's own
    bar is off and its log dicts go to the run's log."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from agent_safety.console import progress

        self.bar = progress(state.max_steps, self.desc, initial=state.global_step, unit="step")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
