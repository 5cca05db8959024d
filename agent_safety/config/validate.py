"""Checks of a composed config before any work: one-line errors that name the key."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from agent_safety.agent.parsing import AGENT_PARSERS
from agent_safety.agent.scratchpad import JUDGE_VIEWS


class ConfigError(ValueError):
    """A composed config that cannot run; the message names the key."""


KNOWN_METRICS = ("safety", "helpfulness")
#: ``eval.method``: ``evaluate.base.METHODS`` maps each to its evaluator.
EVAL_METHODS = ("estimate", "generative")
#: ``eval.agent.backend``: ``evaluate.generative.agent`` builds each.
AGENT_BACKENDS = ("transformers", "vllm", "openai")


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take: ``low``..``high`` (each end open where ``*_open``), plus ``also``
    (a sentinel such as ``max_steps=-1``), plus null where ``optional``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    also: tuple[float, ...] = ()

    def admits(self, value: float) -> bool:
        if value in self.also:
            return True
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def describe(self) -> str:
        parts = []
        if self.low > -math.inf:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high < math.inf:
            parts.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        text = " and ".join(parts) or "finite"
        extra = [_number(v) for v in self.also] + (["null"] if self.optional else [])
        return text + (f" (or {' or '.join(extra)})" if extra else "")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1, high_open=True)
SCORE = Range(0, 3)
#: numpy's seeds are 32-bit; training seeds each stage with ``seed + stage``.
SEED = Range(0, 2**31 - 1)
#: Every numeric key of the schema and the values it may take (``*``: any objective, any endpoint role).
#: Checked before any work: a value out of range would otherwise run and give silently wrong results
#: (``eval.max_cases=-3`` scores all but the last 3 cases) or fail minutes later with a traceback.
RANGES: dict[str, Range] = {
    "seed": SEED,
    "threads": Range(1, optional=True),
    "model.gpu_hours_per_kpair": NON_NEGATIVE,
    **{f"model.tiny.{k}": AT_LEAST_1 for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "agent_agents", "agent_batch_size")},
    **{f"model.tiny.{k}": NON_NEGATIVE for k in ("init_seed", "agent_cases", "agent_steps", "agent_seed")},
    "model.tiny.rope_theta": POSITIVE,
    "model.tiny.agent_learning_rate": POSITIVE,
    "model.tiny.agent_warmup": FRACTION,
    "data.n_cases": Range(2),
    "data.generator_seed": NON_NEGATIVE,
    "objectives.*.min_margin": SCORE,
    "objectives.*.min_chosen": SCORE,
    "objectives.*.num_train_epochs": Range(0, low_open=True, optional=True),
    "trainer.beta": POSITIVE,
    "trainer.learning_rate": POSITIVE,
    "trainer.num_train_epochs": POSITIVE,
    "trainer.max_steps": Range(1, also=(-1,)),
    "trainer.per_device_train_batch_size": AT_LEAST_1,
    "trainer.gradient_accumulation_steps": AT_LEAST_1,
    "trainer.warmup_ratio": FRACTION,
    "trainer.max_grad_norm": NON_NEGATIVE,
    "trainer.max_length": Range(16),
    "trainer.logging_steps": AT_LEAST_1,
    "trainer.save_steps": AT_LEAST_1,
    "trainer.max_pairs": Range(1, optional=True),
    "trainer.lora.r": AT_LEAST_1,
    "trainer.lora.alpha": POSITIVE,
    "trainer.lora.dropout": FRACTION,
    "eval.temperature": POSITIVE,
    "eval.batch_size": AT_LEAST_1,
    "eval.max_length": Range(1, optional=True),
    "eval.max_cases": Range(1, optional=True),
    "eval.agent.temperature": NON_NEGATIVE,
    "eval.agent.max_tokens_per_step": AT_LEAST_1,
    "eval.agent.token_limit": AT_LEAST_1,
    "eval.agent.max_continuations": NON_NEGATIVE,
    "eval.agent.max_steps": Range(1, optional=True),
    "eval.agent.batch_size": AT_LEAST_1,
    "eval.emulator.retries": NON_NEGATIVE,
    "eval.judge.replicates": AT_LEAST_1,
    "eval.judge.max_parse_retries": NON_NEGATIVE,
    "eval.judge.retry_temperature": NON_NEGATIVE,
    "eval.*.endpoint.max_concurrency": AT_LEAST_1,
    "eval.*.endpoint.timeout_s": POSITIVE,
    "eval.*.endpoint.max_retries": NON_NEGATIVE,
    "eval.*.endpoint.temperature": NON_NEGATIVE,
    "eval.*.endpoint.max_tokens": AT_LEAST_1,
    "eval.*.endpoint.seed": Range(0, optional=True),
}
ROLES = ("agent", "emulator", "judge")


def _expand(cfg: DictConfig, pattern: str) -> list[str]:
    """The concrete keys of ``pattern``: ``*`` is each objective under ``objectives``, each role under ``eval``."""
    if "*" not in pattern:
        return [pattern]
    head, tail = pattern.split(".*.", 1)
    names = list(cfg.objectives) if head == "objectives" else list(ROLES)
    return [f"{head}.{name}.{tail}" for name in names]


def check_ranges(cfg: DictConfig) -> None:
    """Every numeric key within its :data:`RANGES`, or a one-line error naming the key, the value and the range."""
    for pattern, allowed in RANGES.items():
        for key in _expand(cfg, pattern):
            value = OmegaConf.select(cfg, key, default=None)
            if value is None and allowed.optional:
                continue
            if value is None or isinstance(value, bool) or not isinstance(value, int | float) \
                    or not allowed.admits(float(value)):
                raise ConfigError(f"{key} must be {allowed.describe()}, got {value}")


@functools.cache
def dpo_config_keys() -> frozenset[str]:
    """Field names the installed TRL's DPOConfig accepts.

    Importing trl takes seconds (it pulls in transformers): it is done once per process, and only for a
    config that sets ``trainer.dpo`` keys, so planning 180 jobs does not pay it 180 times, or at all.
    """
    from trl import DPOConfig

    return frozenset(f.name for f in dataclasses.fields(DPOConfig))


def validate(cfg: DictConfig) -> None:
    """Reject a config that cannot run, before any work, with a one-line error naming the key."""
    t = cfg.trainer
    check_ranges(cfg)
    stages = list(cfg.schedule.stages)
    if not stages:
        raise ConfigError("schedule.stages must name at least one objective, got []")
    for i, name in enumerate(stages):
        if name not in cfg.objectives:
            known = ", ".join(sorted(cfg.objectives))
            raise ConfigError(f"schedule.stages[{i}]: unknown objective {name!r} (known: {known})")
    for name, obj in cfg.objectives.items():
        validate_objective(name, obj)
    for key in t.dpo:
        if key not in dpo_config_keys():
            raise ConfigError(f"trainer.dpo.{key}: not a field of the installed trl.DPOConfig")
    if cfg.model.source not in ("hub", "tiny"):
        raise ConfigError(f"model.source must be 'hub' or 'tiny', got {cfg.model.source!r}")
    if cfg.model.tiny.agent_loss not in ("trl", "completion"):
        raise ConfigError(f"model.tiny.agent_loss must be 'trl' or 'completion', got {cfg.model.tiny.agent_loss!r}")
    if cfg.model.tiny.copy_numbers and not cfg.model.tiny.induction_init:
        raise ConfigError("model.tiny.copy_numbers needs model.tiny.induction_init: the copying circuit writes them")
    if cfg.model.source == "hub" and not cfg.model.path:
        raise ConfigError("model.path must name a hub id or a local checkpoint when model.source=hub")
    if cfg.model.load_in_4bit and cfg.model.load_in_8bit:
        raise ConfigError("model.load_in_4bit and model.load_in_8bit are exclusive")
    if cfg.data.source not in ("synthetic", "toolemu"):
        raise ConfigError(f"data.source must be 'synthetic' or 'toolemu', got {cfg.data.source!r}")
    validate_on_error(cfg.data)
    if cfg.logger.backend not in ("wandb", "none"):
        raise ConfigError(f"logger.backend must be 'wandb' or 'none', got {cfg.logger.backend!r}")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got {cfg.logger.mode!r}")
    validate_eval(cfg.eval)


def validate_objective(name: str, obj: DictConfig) -> None:
    """One objective's pair rule: which metrics it compares and how."""
    bad = [m for m in obj.metrics if m not in KNOWN_METRICS]
    if not obj.metrics or bad:
        raise ConfigError(f"objectives.{name}.metrics must be a non-empty subset of {KNOWN_METRICS}, got "
                          f"{list(obj.metrics)}")
    if obj.mode not in ("both", "average"):
        raise ConfigError(f"objectives.{name}.mode must be 'both' or 'average', got {obj.mode!r}")


def validate_on_error(data: DictConfig) -> None:
    if data.on_error not in ("raise", "skip"):
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {data.on_error!r}")


def validate_eval(e: DictConfig) -> None:
    """The evaluation setting: its method and, for the generative one, each role's choices."""
    if e.method not in EVAL_METHODS:
        raise ConfigError(f"eval.method must be one of {sorted(EVAL_METHODS)}, got {e.method!r}")
    if e.method != "generative":
        return
    choices = {"eval.agent.backend": (e.agent.backend, AGENT_BACKENDS),
               "eval.emulator.kind": (e.emulator.kind, ("rule", "llm")),
               "eval.judge.kind": (e.judge.kind, ("rule", "llm")),
               "eval.agent.parser": (e.agent.parser, AGENT_PARSERS),
               "eval.judge.view": (e.judge.view, JUDGE_VIEWS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    for key, role, needed in (("agent", e.agent, e.agent.backend == "openai"),
                              ("emulator", e.emulator, e.emulator.kind == "llm"),
                              ("judge", e.judge, e.judge.kind == "llm")):
        for field in ("base_url", "model"):
            if needed and not role.endpoint.get(field):
                raise ConfigError(f"eval.{key}.endpoint.{field} must be set for an endpoint {key}")
    for key, role, needed in (("agent", e.agent, e.agent.backend == "openai"),
                              ("emulator", e.emulator, e.emulator.kind == "llm"),
                              ("judge", e.judge, e.judge.kind == "llm")):
        var = role.endpoint.get("api_key_env")
        if needed and var and not os.environ.get(var):
            raise ConfigError(f"eval.{key}.endpoint.api_key_env names {var}, which is not set in the environment")
