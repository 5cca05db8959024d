"""Every config choice composes; invalid configs fail before any work with a one-line error."""

from __future__ import annotations

import pytest
from conftest import CONF, compose, compose_default
from omegaconf import OmegaConf

from agent_safety.config.validate import ConfigError, validate

GROUPS = ["model", "data", "schedule", "eval", "logger", "paths", "trainer"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("pinned", [False, True], ids=["default", "pinned"])
@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group: str, option: str, pinned: bool) -> None:
    """On the embedded default (tiny_agent, generative) and on the tests' pins (tiny, estimate)."""
    overrides = [f"{group}={option}", "paths.runs_dir=runs", "paths.cache_dir=cache"]
    cfg = compose(overrides) if pinned else compose_default(overrides)
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.schedule.stages


@pytest.mark.parametrize("group,option", [(g, o) for g in ("eval/agent", "eval/emulator", "eval/judge")
                                          for o in options(g)])
def test_every_evaluation_role_composes_and_validates(group: str, option: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")  # gpt5m names it; validation checks it is set
    cfg = compose(["eval=generative", f"{group}={option}"])
    validate(cfg)
    role = group.split("/")[1]
    assert cfg.eval.method == "generative" and cfg.eval[role]
    OmegaConf.to_container(cfg, resolve=True)


def test_an_endpoint_role_without_its_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^eval.judge.endpoint.base_url must be set"):
        validate(compose(["eval=generative", "eval/judge=llm", "eval.judge.endpoint.base_url=null"]))
    with pytest.raises(ConfigError, match=r"^eval.method must be one of"):
        validate(compose(["eval.method=magic"]))


@pytest.mark.parametrize("objective", options("objective"))
def test_every_objective_composes(objective: str) -> None:
    cfg = compose([f"objective@objectives.{objective}={objective}"])
    assert cfg.objectives[objective].metrics


def test_presets_have_the_study_orders() -> None:
    stages = {s: list(compose([f"schedule={s}"]).schedule.stages) for s in options("schedule")}
    assert stages == {"S": ["safety"], "H": ["helpfulness"], "S_H": ["safety", "helpfulness"],
                      "H_S": ["helpfulness", "safety"], "SH": ["both"]}


def test_any_stage_list_works() -> None:
    cfg = compose(["schedule.stages=[safety,helpfulness,safety]", "schedule.name=S_H_S"])
    validate(cfg)
    assert list(cfg.schedule.stages) == ["safety", "helpfulness", "safety"]


def test_study_defaults_and_tiny_overrides() -> None:
    hub = compose(["model=llama3.1-8b"])
    t = hub.trainer
    assert (t.beta, t.learning_rate, t.num_train_epochs, t.per_device_train_batch_size) == (0.1, 5e-5, 1, 1)
    assert (t.gradient_accumulation_steps, t.warmup_ratio, t.lr_scheduler_type, t.max_grad_norm) == (8, 0.1, "cosine",
                                                                                                      1.0)
    assert (t.lora.r, t.lora.alpha, t.lora.dropout, t.lora.target_modules) == (16, 32, 0.05, "all-linear")
    assert t.max_length == 8192 and hub.objectives.both.num_train_epochs == 3
    assert hub.model.path == "meta-llama/Llama-3.1-8B-Instruct" and hub.model.trust_remote_code is False
    tiny = compose([])
    assert tiny.model.source == "tiny" and tiny.trainer.learning_rate > 5e-5


def test_the_default_is_the_tiny_agent_scored_generatively_and_the_study_data_by_the_estimate() -> None:
    """``make run`` and the orders sweep act and judge; ``model=tiny eval=estimate`` is the offline proxy, and the
    study's data, which the rule emulator and judges cannot score, keeps the estimate unless told otherwise."""
    for overrides in ([], ["+sweep=orders", "hydra/launcher=submitit_local"]):
        cfg = compose_default(overrides)
        validate(cfg)
        assert (cfg.model.name, cfg.eval.method, cfg.data.name) == ("tiny_agent", "generative", "synthetic")
        assert cfg == compose_default(["model=tiny_agent", "eval=generative", *overrides])
    smoke = compose_default(["+sweep=smoke"])  # the mechanics smoke sweep stays on the proxy, a minute
    assert (smoke.model.name, smoke.eval.method) == ("tiny", "estimate")
    assert compose_default(["+sweep=smoke", "model=tiny_agent", "eval=generative"]).eval.method == "generative"
    proxy = compose_default(["model=tiny", "eval=estimate"])
    assert (proxy.model.name, proxy.eval.method, proxy.data.pair_format) == ("tiny", "estimate", "study")
    assert compose([]) == proxy
    for data in ("toolemu_gpt5m", "toolemu_q32"):
        assert compose_default([f"data={data}"]).eval.method == "estimate"
        chosen = compose_default([f"data={data}", "eval=generative"])
        assert (chosen.data.name, chosen.eval.method) == (data, "generative")
        assert compose_default([f"data={data}", "model=llama3.1-8b"]).eval.method == "estimate"


@pytest.mark.parametrize("override,key", [
    ("trainer.beta=0", "trainer.beta"),
    ("trainer.beta=-1", "trainer.beta"),
    ("schedule.stages=[]", "schedule.stages"),
    ("schedule.stages=[safety,kindness]", "schedule.stages[1]"),
    ("+trainer.dpo.not_a_dpo_key=1", "trainer.dpo.not_a_dpo_key"),
    ("objectives.both.mode=sometimes", "objectives.both.mode"),
    ("data.on_error=ignore", "data.on_error"),
    ("model.tiny.agent_loss=fast", "model.tiny.agent_loss"),
    ("model.tiny.copy_numbers=true", "model.tiny.copy_numbers"),
    # numeric ranges: each of these ran before, to wrong results or a late traceback
    ("eval.max_cases=-3", "eval.max_cases must be >= 1 (or null), got -3"),
    ("eval.max_cases=0", "eval.max_cases must be >= 1 (or null), got 0"),
    ("seed=-1", "seed must be >= 0 and <= 2147483647, got -1"),
    ("trainer.max_steps=0", "trainer.max_steps must be >= 1 (or -1), got 0"),
    ("trainer.lora.dropout=1.0", "trainer.lora.dropout"),
    ("trainer.warmup_ratio=-0.1", "trainer.warmup_ratio"),
    ("trainer.max_pairs=0", "trainer.max_pairs"),
    ("objectives.safety.min_margin=4", "objectives.safety.min_margin"),
    ("eval.judge.endpoint.timeout_s=0", "eval.judge.endpoint.timeout_s"),
    ("eval.agent.temperature=-1", "eval.agent.temperature"),
    ("data.n_cases=1", "data.n_cases"),
])
def test_invalid_config_one_line_error(override: str, key: str) -> None:
    cfg = compose([override])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    message = str(e.value)
    assert key in message and "\n" not in message


def test_a_value_out_of_range_stops_a_run_before_any_work(make_cfg, tmp_path) -> None:
    from agent_safety.run.schedule import run_schedule

    with pytest.raises(ConfigError, match=r"^eval.max_cases must be >= 1"):
        run_schedule(make_cfg("eval.max_cases=-3", "logger=none"))
    assert not (tmp_path / "runs").exists()  # nothing written, nothing marked


def test_every_numeric_key_of_the_schema_has_a_range() -> None:
    from agent_safety.config.validate import RANGES, ROLES
    from agent_safety.records.identity import schema_defaults

    numeric = {k for k, v in schema_defaults().items() if isinstance(v, int | float) and not isinstance(v, bool)}
    covered = {k.replace("eval.*.", f"eval.{r}.") for k in RANGES for r in ROLES}
    assert numeric - covered == set()


def test_known_dpo_keys_pass() -> None:
    validate(compose(["+trainer.dpo.loss_type=[sigmoid]", "+trainer.dpo.label_smoothing=0.1"]))


def test_unknown_top_level_key_is_rejected_by_schema() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(["trainer.betta=0.2"])
