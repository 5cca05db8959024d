"""What every step of a run shares: its config, run dir, tracker, data, split, tokenizer and models.

Built once per run by :func:`prepare`; the steps of ``run.schedule`` (train or adopt a stage, evaluate
it, emit its record) and the evaluator read it. :class:`StageModels` keeps at most one model in memory:
the one the last step produced, or loads a stage's model from the run dir when a step needs it: its merged
model, or the base with the stage's stacked adapter merged in (``trainer.save_merged=false``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agent_safety.data.split import split_cases
from agent_safety.records.rundir import RunDir
from agent_safety.train.stacked import merged_from_stacked


@dataclass
class StageModels:
    """The model after each stage, loaded when first needed; the latest one stays in memory."""

    load_path: Callable[[str], Any]
    base_path: str
    rd: RunDir
    current: tuple[int, Any] | None = None

    def path(self, stage: int) -> str:
        return self.base_path if stage == 0 else str(self.rd.model_dir(stage))

    def adapter(self, stage: int) -> str | None:
        """The stage's stacked adapter over the base, where one was written."""
        return str(self.rd.stacked_dir(stage)) if stage > 0 and self.rd.has_stacked(stage) else None

    def get(self, stage: int) -> Any:
        if self.current is None or self.current[0] != stage:
            self.current = None  # free the old one before loading the next
            self.current = (stage, self.load(stage))
        return self.current[1]

    def load(self, stage: int) -> Any:
        if stage == 0 or self.rd.has_merged(stage) or not self.rd.has_stacked(stage):
            return self.load_path(self.path(stage))
        return merged_from_stacked(self.load_path(self.base_path), self.rd.stacked_dir(stage))

    def put(self, stage: int, model: Any) -> None:
        self.current = (stage, model)

    def take(self, stage: int) -> Any:
        """The stage's model for training on: the caller consumes it (the adapter is merged into it)."""
        model = self.get(stage)
        self.current = None
        return model

    def base_loader(self) -> Callable[[], Any]:
        """Loads the base model without keeping it (the estimate's base log-probs need it once per cache)."""
        return lambda: self.load_path(self.base_path)


@dataclass
class RunContext:
    cfg: DictConfig
    config: dict[str, Any]
    run_id: str
    eval_id: str
    rd: RunDir
    tracker: Any
    bench: Any
    train_cases: list[int]
    test_cases: list[int]
    base_path: str
    base_identity: str
    tokenizer: Any
    tokenized: Any
    tokenizer_key: str
    device: str
    cache_dir: Path
    models: StageModels = field(repr=False)


def prepare(cfg: DictConfig, config: dict[str, Any], run_id: str, eval_id: str, rd: RunDir,
            tracker: Any) -> RunContext:
    """Seed, threads, device; load the data and split it by seed; resolve the base model and tokenizer."""
    from transformers import set_seed

    from agent_safety.data.benchmark import load_data
    from agent_safety.pairs.formatting import cached_tokenize
    from agent_safety.store.cache import tokenizer_key
    from agent_safety.train.models import keep_freed_memory, load_model, load_tokenizer, pick_device, resolve_base

    configure_threads(cfg.threads)
    set_seed(cfg.seed)
    cache_dir = Path(cfg.paths.cache_dir)
    device = pick_device(cfg.device)
    if device == "cpu":
        keep_freed_memory()
    bench = load_data(cfg.data, cache_dir)
    train_cases, test_cases = split_cases(bench.n_cases, cfg.seed)
    if cfg.eval.max_cases:
        test_cases = test_cases[: cfg.eval.max_cases]
    base_path, base_identity = resolve_base(cfg.model, bench, cache_dir)
    tokenizer = load_tokenizer(base_path, cfg.model)
    models = StageModels(lambda path: load_model(path, cfg.model, device), base_path, rd)
    tokenized = cached_tokenize(tokenizer, bench, cache_dir, cfg.data.pair_format, cfg.eval.agent.template,
                                cfg.data.mask_observations)
    return RunContext(cfg, config, run_id, eval_id, rd, tracker, bench, list(train_cases), list(test_cases),
                      base_path, base_identity, tokenizer, tokenized, tokenizer_key(tokenizer), device, cache_dir,
                      models)


def configure_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))
