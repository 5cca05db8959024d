"""The offline estimate as an evaluator (``eval.method=estimate``): see ``evaluate.estimate`` for the proxy.

Base log-probs are computed once per base model x data x split and cached, so stage 0 and every run of a
sweep on the same base reuse them; each trained stage scores the same candidates with its own model.
"""

from __future__ import annotations

from typing import Any

from agent_safety.evaluate.base import EvalContext, StageModel
from agent_safety.evaluate.estimate import (
    as_record,
    base_cache_path,
    cached_base_logps,
    candidates,
    estimate,
    sequence_logps,
)
from agent_safety.pairs.rules import PairRule


class OfflineEstimate:
    name = "estimate"

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx
        cfg = ctx.cfg
        self.indices = candidates(ctx.bench, ctx.test_cases)
        self.max_length = cfg.eval.max_length or cfg.trainer.max_length
        self.rules = {m: PairRule.from_config(cfg.objectives[m]) for m in ("safety", "helpfulness")
                      if m in cfg.objectives}
        self._base: tuple[Any, Any] | None = None

    def _logps(self, model: Any, desc: str) -> tuple[Any, Any]:
        return sequence_logps(model, self.ctx.tokenized, self.ctx.bench, self.indices, self.ctx.cfg.eval.batch_size,
                              self.max_length, desc, pad_id=self.ctx.tokenizer.pad_token_id)

    def base(self, load: Any) -> tuple[Any, Any]:
        """The base model's log-probs and token counts, from the cache or computed with ``load()``."""
        if self._base is None:
            path = base_cache_path(self.ctx.cache_dir, self.ctx.base_identity, self.ctx.bench, self.indices,
                                   self.max_length)
            self._base = cached_base_logps(path, lambda: self._logps(load(), "base log-probs"))
        return self._base

    def score(self, model: StageModel) -> dict[str, Any]:
        base_logps, n_tokens = self.base(model.load if model.stage == 0 else self.ctx.models.base_loader())
        logps = base_logps if model.stage == 0 else self._logps(model.load(), f"stage {model.stage} log-probs")[0]
        cfg = self.ctx.cfg.eval
        est = estimate(self.ctx.bench, self.indices, logps, base_logps, n_tokens, self.rules, cfg.per_token,
                       cfg.temperature)
        return as_record(est)
