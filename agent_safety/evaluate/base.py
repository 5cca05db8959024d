"""The evaluator interface: how a run scores the model of each of its stages.

An evaluator is built once per run and evaluation setting (``eval.method``) from the run's context, and
scores one stage at a time. It gets a :class:`StageModel`, a handle that loads the model only if the method
needs weights in this process (the offline estimate does; a generative evaluation against a server may only
need the path), and returns the scores of a stage record: ``safety``, ``helpfulness``, per-case lists and
whatever else the method reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig

from agent_safety.records.rundir import RunDir

#: ``eval.method`` (one of ``config.validate.EVAL_METHODS``) -> module and class of its evaluator, imported only
#: when chosen.
METHODS: dict[str, tuple[str, str]] = {
    "estimate": ("agent_safety.evaluate.offline", "OfflineEstimate"),
    "generative": ("agent_safety.evaluate.generative.evaluator", "GenerativeEvaluator"),
}


@dataclass
class StageModel:
    """The model after stage ``stage`` (0: the base): where it is, and how to get it in memory.

    ``path`` is its merged model folder (which ``trainer.save_merged=false`` leaves unwritten); ``adapter`` its
    stacked adapter over the base model at ``base`` (None for the base itself, or a stage trained before
    stacked adapters were written)."""

    stage: int
    path: str
    load: Callable[[], Any]
    adapter: str | None = None
    base: str | None = None


class EvalContext(Protocol):
    """What an evaluator reads of its run: ``run.context.RunContext`` is one, built by the run above."""

    cfg: DictConfig
    run_id: str
    eval_id: str
    rd: RunDir
    bench: Any
    test_cases: list[int]
    base_path: str
    base_identity: str
    tokenizer: Any
    tokenized: Any
    cache_dir: Path
    models: Any


class Evaluator(Protocol):
    name: str

    def score(self, model: StageModel) -> dict[str, Any]:
        """The stage's scores: ``safety``, ``helpfulness`` (means over test cases), ``cases``,
        ``case_safety``, ``case_helpfulness``, and the method's own fields."""
        ...


def make_evaluator(ctx: EvalContext) -> Evaluator:
    """The evaluator ``ctx.cfg.eval.method`` names (``config.validate`` checked it is one)."""
    import importlib

    module, cls = METHODS[ctx.cfg.eval.method]
    return getattr(importlib.import_module(module), cls)(ctx)
