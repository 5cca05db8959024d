"""Run identity hashes what changes the trained models; evaluation has an identity of its own."""

from __future__ import annotations

import dataclasses
from dataclasses import field

import pytest
from conftest import compose

from agent_safety.config.schema import EvalConfig, RunConfig, TrainerConfig, to_container
from agent_safety.records.identity import eval_id, run_id, stage_key

#: Run ids and stage keys as the project minted them before evaluation had its own identity.
V1_IDS = {
    (): ("bd98c9059a", ["6ab04695938604ad4294", "9e7d979e21b40b524e04"]),
    ("schedule=S",): ("1e655c3ec1", ["6ab04695938604ad4294"]),
    ("schedule=H_S", "seed=2"): ("5645071ecb", ["75a992ddaf2c587edb9e", "acee834de11dc8ea3d0b"]),
    ("schedule=SH", "objectives.both.mode=average"): ("d26dd1bd75", ["8bf525d1d50c9fa82d80"]),
    ("trainer.beta=0.05",): ("c6222c771c", ["9302bea66fca360e6d40", "9c1afc25f87e202294c5"]),
    ("model=phi-4", "data=toolemu_gpt5m"): ("d14c4a61e7", ["dd2b9a0541a8cb061fd2", "14832e8d4e735f212283"]),
}


@pytest.mark.parametrize("overrides", list(V1_IDS))
def test_run_ids_and_stage_keys_are_those_of_version_1(overrides: tuple[str, ...]) -> None:
    config = to_container(compose(list(overrides)))
    rid, keys = V1_IDS[overrides]
    assert run_id(config) == rid
    assert [stage_key(config, k) for k in range(1, len(keys) + 1)] == keys


def _with_field(cls: type, name: str, default: object) -> type:
    """``cls`` with one more defaulted field: the schema as a later release might have it."""
    return dataclasses.make_dataclass(cls.__name__, [(name, type(default), field(default=default))], bases=(cls,))


def _run_config_with(group: str, cls: type) -> type:
    """The run schema with one group's dataclass swapped for ``cls``."""
    return dataclasses.make_dataclass("RunConfig", [(group, cls, field(default_factory=cls))], bases=(RunConfig,))


def test_a_new_defaulted_key_does_not_change_the_run_id() -> None:
    config = to_container(compose([]))
    later = _run_config_with("trainer", _with_field(TrainerConfig, "new_knob", 3))

    at_default = {**config, "trainer": {**config["trainer"], "new_knob": 3}}
    changed = {**config, "trainer": {**config["trainer"], "new_knob": 4}}
    assert run_id(at_default, later) == run_id(config) == "bd98c9059a"
    assert run_id(changed, later) != run_id(config)
    assert stage_key(at_default, 1, later) == stage_key(config, 1)


def test_evaluation_settings_leave_the_run_id_and_name_an_eval_id() -> None:
    base = to_container(compose([]))
    for override in ["eval.per_token=true", "eval.temperature=2.0", "eval.max_cases=4", "eval.batch_size=1"]:
        other = to_container(compose([override]))
        assert run_id(other) == run_id(base), override
        assert [stage_key(other, k) for k in (1, 2)] == [stage_key(base, k) for k in (1, 2)]
    assert eval_id(to_container(compose(["eval.per_token=true"]))) != eval_id(base)
    assert eval_id(to_container(compose(["eval.temperature=2.0"]))) != eval_id(base)
    assert eval_id(to_container(compose(["eval.batch_size=1", "eval.name=mine"]))) == eval_id(base)


def test_a_new_defaulted_eval_key_does_not_change_the_eval_id() -> None:
    config = to_container(compose([]))
    later = _run_config_with("eval", _with_field(EvalConfig, "new_eval_knob", "x"))

    assert eval_id({**config, "eval": {**config["eval"], "new_eval_knob": "x"}}, later) == eval_id(config)
    assert eval_id({**config, "eval": {**config["eval"], "new_eval_knob": "y"}}, later) != eval_id(config)


def test_an_objective_the_schedule_does_not_use_leaves_the_run_id() -> None:
    base = to_container(compose(["schedule=S_H"]))
    unused = to_container(compose(["schedule=S_H", "objectives.both.mode=average", "objectives.both.min_margin=1"]))
    used = to_container(compose(["schedule=S_H", "objectives.helpfulness.min_margin=1"]))
    assert run_id(unused) == run_id(base)
    assert run_id(used) != run_id(base)
    assert stage_key(used, 1) == stage_key(base, 1) and stage_key(used, 2) != stage_key(base, 2)


def test_eval_groups_added_later_leave_the_default_eval_id() -> None:
    """The generative evaluation's agent, emulator and judge groups came after the first eval ids."""
    config = to_container(compose([]))
    assert eval_id(config) == "e3637420"
    assert eval_id(to_container(compose(["eval.judge.replicates=3"]))) != "e3637420"
    assert eval_id(to_container(compose(["eval.judge.endpoint.base_url=http://elsewhere/v1"]))) == "e3637420"
