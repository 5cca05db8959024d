"""Checks of a composed config before any work: one-line errors that name the key."""

from __future__ import annotations

import dataclasses
import functools
import os

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A composed config that cannot run; the message names the key."""


KNOWN_METRICS = ("safety", "helpfulness")


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
    if not t.beta > 0:
        raise ConfigError(f"trainer.beta must be > 0, got {t.beta}")
    if not t.learning_rate > 0:
        raise ConfigError(f"trainer.learning_rate must be > 0, got {t.learning_rate}")
    if t.max_length < 16:
        raise ConfigError(f"trainer.max_length must be >= 16, got {t.max_length}")
    stages = list(cfg.schedule.stages)
    if not stages:
        raise ConfigError("schedule.stages must name at least one objective, got []")
    for i, name in enumerate(stages):
        if name not in cfg.objectives:
            known = ", ".join(sorted(cfg.objectives))
            raise ConfigError(f"schedule.stages[{i}]: unknown objective {name!r} (known: {known})")
    for name, obj in cfg.objectives.items():
        bad = [m for m in obj.metrics if m not in KNOWN_METRICS]
        if not obj.metrics or bad:
            raise ConfigError(f"objectives.{name}.metrics must be a non-empty subset of {KNOWN_METRICS}, got "
                              f"{list(obj.metrics)}")
        if obj.mode not in ("both", "average"):
            raise ConfigError(f"objectives.{name}.mode must be 'both' or 'average', got {obj.mode!r}")
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
    if cfg.data.on_error not in ("raise", "skip"):
        raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {cfg.data.on_error!r}")
    if cfg.logger.backend not in ("wandb", "none"):
        raise ConfigError(f"logger.backend must be 'wandb' or 'none', got {cfg.logger.backend!r}")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got {cfg.logger.mode!r}")
    if cfg.eval.temperature <= 0:
        raise ConfigError(f"eval.temperature must be > 0, got {cfg.eval.temperature}")
    validate_eval(cfg.eval)


def validate_eval(e: DictConfig) -> None:
    """The evaluation setting: its method and, for the generative one, each role's choices."""
    from agent_safety.evaluate.base import METHODS
    from agent_safety.evaluate.generative.parsing import AGENT_PARSERS

    if e.method not in METHODS:
        raise ConfigError(f"eval.method must be one of {sorted(METHODS)}, got {e.method!r}")
    if e.method != "generative":
        return
    choices = {"eval.agent.backend": (e.agent.backend, ("transformers", "vllm", "openai")),
               "eval.emulator.kind": (e.emulator.kind, ("rule", "llm")),
               "eval.judge.kind": (e.judge.kind, ("rule", "llm")),
               "eval.agent.parser": (e.agent.parser, AGENT_PARSERS)}
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
    if e.agent.token_limit < 1 or e.agent.max_tokens_per_step < 1:
        raise ConfigError("eval.agent.token_limit and eval.agent.max_tokens_per_step must be >= 1")
    if e.judge.replicates < 1:
        raise ConfigError(f"eval.judge.replicates must be >= 1, got {e.judge.replicates}")
