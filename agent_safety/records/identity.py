"""Run identity and evaluation identity: what a run dir's name and an eval dir's name are hashes of.

**Run id** (version 1): a hash of what changes the *trained models*, as an explicit allow-list: the model,
the data, the objectives, the schedule, the trainer and the seed. Paths, logging, launcher, hardware and
evaluation settings are not in it, so re-scoring a run trains nothing.

Two rules keep ids stable:

- *Keys added after version 1 count only when they differ from the schema's default* (Dora's rule), so a
  new defaulted key never moves an id, and every completed run and shared stage stays found.
- *The blob is written as version 1 wrote it.* Version 1 hashed the offline estimate's settings and every
  composed objective too; the blob still holds the estimate's settings, at their defaults, and objectives
  the schedule does not use, at their presets in ``conf/objective/``. Every run id minted by version 1
  with the estimate's default settings is unchanged, and changing an objective a schedule does not use, or
  an evaluation setting, no longer changes it. (A version-1 run dir scored with other estimate settings gets
  a new id: ``agent-safety migrate RUNS`` moves it.)

**Eval id**: a hash of the evaluation settings, under the same rule for keys added later; a run dir holds
one result set per eval id under ``eval/<eval_id>/``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent_safety.config.compose import PROJECT_ROOT
from agent_safety.store.hashing import content_hash

#: Top-level keys that decide the trained models.
TRAINING_KEYS: tuple[str, ...] = ("model", "data", "objectives", "schedule", "trainer", "seed")
#: Keys under those that do not change what is trained (planning estimates, what is kept on disk).
NOT_HASHED: frozenset[str] = frozenset({"model.gpu_hours_per_kpair", "trainer.save_merged"})
#: Evaluation keys that do not change the scores: a label, where servers are, and throughput knobs.
EVAL_NOT_HASHED: frozenset[str] = frozenset({"eval.name", "eval.batch_size", "eval.agent.batch_size", *(
    f"eval.{role}.endpoint.{k}" for role in ("agent", "emulator", "judge")
    for k in ("base_url", "api_key_env", "max_concurrency", "timeout_s", "max_retries"))})
#: The offline estimate's settings as version 1 hashed them (their defaults then).
V1_EVAL: Mapping[str, Any] = {"per_token": False, "temperature": 1.0, "max_length": None, "max_cases": None}
#: Every key version 1 of the schema had, under the hashed groups (``*`` stands for any objective name).
V1_FIELDS: frozenset[str] = frozenset((
    "model.name", "model.source", "model.path", "model.dtype", "model.attn_implementation", "model.load_in_4bit",
    "model.load_in_8bit", "model.trust_remote_code", "model.gpu_hours_per_kpair", "model.tiny.vocab_size",
    "model.tiny.hidden_size", "model.tiny.intermediate_size", "model.tiny.num_hidden_layers",
    "model.tiny.num_attention_heads", "model.tiny.num_key_value_heads", "model.tiny.max_position_embeddings",
    "model.tiny.init_seed", "data.name", "data.source", "data.judge", "data.root", "data.n_cases",
    "data.generator_seed", "data.on_error", "objectives.*.name", "objectives.*.metrics", "objectives.*.min_margin",
    "objectives.*.min_chosen", "objectives.*.mode", "objectives.*.num_train_epochs", "schedule.name",
    "schedule.stages", "trainer.beta", "trainer.learning_rate", "trainer.num_train_epochs", "trainer.max_steps",
    "trainer.per_device_train_batch_size", "trainer.gradient_accumulation_steps", "trainer.warmup_ratio",
    "trainer.lr_scheduler_type", "trainer.optim", "trainer.max_grad_norm", "trainer.max_length", "trainer.bf16",
    "trainer.gradient_checkpointing", "trainer.precompute_ref_log_probs", "trainer.logging_steps",
    "trainer.save_steps", "trainer.max_pairs", "trainer.lora.r", "trainer.lora.alpha", "trainer.lora.dropout",
    "trainer.lora.target_modules", "trainer.dpo", "eval.per_token", "eval.temperature", "eval.batch_size",
    "eval.max_length", "eval.max_cases", "seed",
))


#: The nested groups version 1 had; a group added later, with every key at its default, leaves no trace.
_V1_GROUPS: frozenset[str] = frozenset(".".join(f.split(".")[:i]) for f in V1_FIELDS
                                       for i in range(1, f.count(".") + 1))


def schema_defaults(cls: type | None = None) -> Mapping[str, Any]:
    """Dotted key -> default of every schema field that has one (``objectives.*.mode`` for dict entries)."""
    if cls is None:
        from agent_safety.config.schema import RunConfig

        cls = RunConfig
    return _defaults(cls)


@functools.lru_cache(maxsize=8)
def _defaults(cls: type) -> Mapping[str, Any]:
    """Read-only: the schema does not change within a process, and plans hash hundreds of configs."""
    return MappingProxyType(_walk_defaults(cls, ""))


def _walk_defaults(cls: type, prefix: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind, path = hints[f.name], f"{prefix}{f.name}"
        args = typing.get_args(kind)
        if dataclasses.is_dataclass(kind):
            out.update(_walk_defaults(kind, path + "."))
        elif typing.get_origin(kind) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            out.update(_walk_defaults(args[1], path + ".*."))
        elif f.default is not dataclasses.MISSING and str(f.default) != "???":
            out[path] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[path] = f.default_factory()
    return out


def _pattern(path: str) -> str:
    parts = path.split(".")
    return ".".join(["objectives", "*", *parts[2:]]) if parts[0] == "objectives" and len(parts) > 1 else path


def _prune(tree: Mapping[str, Any], prefix: str, drop: frozenset[str], defaults: Mapping[str, Any]) -> dict:
    """Copy of ``tree`` without ``drop`` keys, nor keys newer than version 1 that sit at their default."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        pattern = _pattern(path)
        if path in drop:
            continue
        if isinstance(value, Mapping) and pattern not in V1_FIELDS and pattern != "objectives.*":
            if pattern in defaults and value == defaults[pattern]:
                continue
            pruned = _prune(value, path + ".", drop, defaults)
            if pruned or pattern in _V1_GROUPS:
                out[key] = pruned
            continue
        if isinstance(value, Mapping) and pattern == "objectives.*":
            out[key] = _prune(value, path + ".", drop, defaults)
            continue
        if pattern not in V1_FIELDS and pattern in defaults and value == defaults[pattern]:
            continue
        out[key] = value
    return out


def training_config(config: Mapping[str, Any], schema: type | None = None) -> dict[str, Any]:
    """What decides the trained models, pruned as in the module docstring (objectives unfolded as given)."""
    defaults = schema_defaults(schema)
    tree = {k: config[k] for k in TRAINING_KEYS if k in config}
    return _prune(tree, "", NOT_HASHED, defaults)


@functools.lru_cache(maxsize=32)
def objective_preset(name: str, conf_dir: str) -> dict[str, Any] | None:
    """An objective as its preset ``conf/objective/<name>.yaml`` composes it, or None without one."""
    from omegaconf import OmegaConf

    from agent_safety.config.schema import ObjectiveConfig

    path = Path(conf_dir) / "objective" / f"{name}.yaml"
    if not path.is_file():
        return None
    merged = OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), OmegaConf.load(path))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def _v1_blob(config: Mapping[str, Any], schema: type | None) -> dict[str, Any]:
    blob = training_config(config, schema)
    used = set(blob.get("schedule", {}).get("stages", []))
    objectives = {}
    for name, obj in blob.get("objectives", {}).items():
        preset = obj if name in used else objective_preset(name, str(PROJECT_ROOT / "conf"))
        if preset is not None:
            objectives[name] = preset
    blob["objectives"] = objectives
    blob["eval"] = dict(V1_EVAL)
    return blob


def run_id(config: Mapping[str, Any], schema: type | None = None) -> str:
    """The run's id: a short hash of what changes its trained models (see the module docstring)."""
    return content_hash(_v1_blob(config, schema), 10)


def stage_key(config: Mapping[str, Any], stage: int, schema: type | None = None) -> str:
    """Identity of a schedule's first ``stage`` stages, shared by every schedule with that prefix (S_H's first
    stage is S): the run's blob without the schedule, plus the objectives of those stages in order."""
    blob = _v1_blob(config, schema)
    prefix = [{"objective": name, **blob["objectives"][name]} for name in blob["schedule"]["stages"][:stage]]
    rest = {k: v for k, v in blob.items() if k not in ("schedule", "objectives")}
    return content_hash({"config": rest, "prefix": prefix}, 20)


def eval_id(config: Mapping[str, Any], schema: type | None = None) -> str:
    """The evaluation setting's id: a short hash of the settings that change the scores."""
    tree = _prune({"eval": dict(config.get("eval") or {})}, "", EVAL_NOT_HASHED, schema_defaults(schema))
    return content_hash(tree["eval"] if "eval" in tree else {}, 8)


def default_eval_id() -> str:
    """The eval id of the schema's default evaluation setting (what ``aggregate`` fits when runs hold several)."""
    defaults = schema_defaults()
    return eval_id({"eval": {k.split(".", 1)[1]: v for k, v in defaults.items() if k.startswith("eval.")}})


def eval_setting(config: Mapping[str, Any]) -> dict[str, Any]:
    """What ``eval/<eval_id>/eval.yaml`` records: the evaluation settings and the judge of the scores."""
    return {**config["eval"], "judge": config["data"]["judge"]}
