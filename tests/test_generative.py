"""Generative evaluation end to end: the episode loop, a trained run's stages scored offline, the rollouts
loaded back as data, and the errors a user meets (a toolkit without a spec, an unreachable endpoint, a key)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import compose, compose_default, stage_records

from agent_safety.agent.episode import FINAL_ANSWER, NO_FORMAT, TOKEN_LIMIT, Generation
from agent_safety.agent.prompts import Prompts, tool_names
from agent_safety.config.validate import ConfigError, validate
from agent_safety.data.benchmark import load_data
from agent_safety.data.toolemu import DataError, load_benchmark
from agent_safety.evaluate.generative.emulator import RuleEmulator
from agent_safety.evaluate.generative.evaluator import check_toolkits
from agent_safety.evaluate.generative.rollout import OBSERVATION_STOP, run_episodes

QUICK = ["trainer.max_steps=3", "trainer.max_pairs=12", "logger=none"]
GENERATIVE = ["eval=generative", "eval.max_cases=3", "eval.agent.token_limit=48", "eval.agent.max_tokens_per_step=24"]


class ScriptedAgent:
    """An agent backend that answers from a script, one output per turn and case: the episode loop's own
    logic, with the real prompts, parser and rule emulator around it."""

    def __init__(self, scripts: dict[str, list[str]], tokens: int = 5) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.tokens = tokens
        self.calls: list[tuple[int, list[str]]] = []

    def generate(self, prompts: list[list[dict]], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        self.calls.append((len(prompts), stop))
        out = []
        for messages in prompts:
            text = messages[-1]["content"]
            key = next(k for k in self.scripts if k in text)
            out.append(Generation(self.scripts[key].pop(0), self.tokens, prompt_tokens=len(text.split())))
        return out

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    cfg = compose([f"paths.cache_dir={tmp_path_factory.mktemp('cache')}"])
    bench = load_data(cfg.data, cfg.paths.cache_dir)
    return cfg, bench


def test_the_episode_loop_reads_every_kind_of_turn(world) -> None:
    cfg, bench = world
    cases = [(i, bench.cases[i]) for i in (0, 8, 16, 24)]
    lookup = {}
    for idx, case in cases:
        kits = [bench.toolkits[k] for k in case["Toolkits"]]
        lookup[idx] = next(n for n in tool_names(kits) if "Search" in n or "List" in n or "Execute" in n)
    instr = {idx: case["User Instruction"] for idx, case in cases}
    a, b, c, d = (i for i, _ in cases)
    scripts = {
        instr[a]: [f'Thought: look first.\nAction: {lookup[a]}\nAction Input: {{"keywords": "x"}}\n'
                   'Observation: {"made": "up"}', "Thought: done.\nFinal Answer: all handled."],
        instr[b]: ["Let me think about this", "\nAction: NoSuchTool\nAction Input: {}",
                   f"Action: {lookup[b]}\nAction Input: {{not json", "Final Answer: gave up."],
        instr[c]: ["hmm"] * 7,
        instr[d]: [f"<think>Maybe Action: {lookup[d]}</think>\nFinal Answer: nothing to do."],
    }
    settings = compose(["eval=generative", "eval.agent.token_limit=100"]).eval.agent
    agent = ScriptedAgent(scripts, tokens=5)
    episodes = run_episodes(cases, bench.toolkits, agent, RuleEmulator(cfg.data.generator_seed), Prompts.load(),
                            settings)
    ea, eb, ec, ed = episodes
    assert ea.end == FINAL_ANSWER and ea.answer == "all handled." and len(ea.steps) == 1
    assert "made" not in ea.steps[0].log and ea.steps[0].emulator and ea.steps[0].observation != "{}"
    assert json.loads(ea.steps[0].observation)  # the rule emulator's lookup answer
    assert eb.end == FINAL_ANSWER and eb.continuations == 1 and len(eb.steps) == 2
    assert "NoSuchTool" in eb.steps[0].observation and not eb.steps[0].emulator  # never reached the emulator
    assert "InvalidRequestException" in eb.steps[1].observation and not eb.steps[1].emulator
    assert eb.steps[0].log.startswith("Let me think about this")  # the continued text stays in the trajectory
    assert ec.end == NO_FORMAT and ec.continuations == 6 and ec.answer.startswith("(no final answer")
    assert all(stop == [OBSERVATION_STOP] for _, stop in agent.calls)
    assert [n for n, _ in agent.calls][:2] == [4, 3]  # one batch per round of every unfinished episode
    capped = run_episodes([cases[3]], bench.toolkits, ScriptedAgent({instr[d]: ["still thinking"] * 3}, tokens=6),
                          RuleEmulator(cfg.data.generator_seed), Prompts.load(),
                          compose(["eval=generative", "eval.agent.token_limit=10",
                                   "eval.agent.stop_at_observation=false"]).eval.agent)
    assert capped[0].end == TOKEN_LIMIT and capped[0].agent_tokens == 12
    assert capped[0].to_record()["output"] == "token limit exceeded"
    assert ed.end == FINAL_ANSWER and ed.final.startswith("<think>") and not ed.steps  # reasoning kept


def test_a_case_whose_toolkit_has_no_spec_names_the_file_and_the_case(world) -> None:
    _, bench = world
    case = dict(bench.cases[3], Toolkits=["Teleporter"])
    with pytest.raises(DataError, match=r"^x/all_toolkits.json: case 3 \(synthetic_3\) uses toolkit\(s\) "
                                        r"\['Teleporter'\] that the toolkit file does not define$"):
        check_toolkits([(3, case)], bench.toolkits, "x/all_toolkits.json")


def test_a_missing_api_key_variable_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"^eval.judge.endpoint.api_key_env names OPENAI_API_KEY, which is not set"):
        validate(compose(["eval=generative", "eval/judge=gpt5m"]))


def test_a_run_is_scored_under_its_own_presets_and_a_checkpoint_under_the_plain_tiny_one() -> None:
    """``agent-safety evaluate``: the presets a run was trained with decide what they put into the evaluation
    setting (the tiny agent's prompt, the study data's estimate), as relaunching it would; a checkpoint folder
    is not fitted to the default preset's agent prompt."""
    from agent_safety.run.evaluate_cli import CHECKPOINT_MODEL, with_presets

    agent_run = {"model": {"name": "tiny_agent"}, "data": {"name": "toolemu_q32"}}
    assert with_presets(["eval=generative"], agent_run) == ["model=tiny_agent", "data=toolemu_q32", "eval=generative"]
    assert with_presets(["model=tiny"], {"model": {"name": "my-model"}, "data": {"name": "synthetic"}}) == [
        "data=synthetic", "model=tiny"]
    assert compose_default(with_presets([], agent_run)).eval.method == "estimate"
    for model in ("tiny", "tiny_agent"):
        run = {"model": {"name": model}, "data": {"name": "synthetic"}}
        assert compose_default(with_presets(["eval=generative"], run)).eval == \
            compose_default([f"model={model}", "eval=generative"]).eval
    assert CHECKPOINT_MODEL == "model=tiny"
    plain = compose_default([CHECKPOINT_MODEL, "eval=generative"]).eval.agent
    assert plain.template is None and plain != compose_default(["eval=generative"]).eval.agent


@pytest.mark.slow
def test_a_trained_runs_stages_are_scored_generatively_and_load_back_as_data(make_cfg, tmp_path: Path) -> None:
    from agent_safety.run.evaluate_cli import evaluate_model, evaluate_run
    from agent_safety.run.schedule import run_schedule

    cfg = make_cfg("schedule=S", *QUICK)
    run = run_schedule(cfg)
    records = evaluate_run(run.run_dir, [f"paths.cache_dir={cfg.paths.cache_dir}", "threads=1", *GENERATIVE])
    assert [r["stage"] for r in records] == [0, 1] and {r["eval_name"] for r in records} == {"generative"}
    for r in records:
        assert 0 <= r["safety"] <= 3 and 0 <= r["helpfulness"] <= 3 and r["n_test_cases"] == 3
        assert sum(r["episode_ends"].values()) == 3 and r["usage"]["agent"]["completion_tokens"] > 0
        assert r["judge_parse_failures"] == {"safety": 0, "helpfulness": 0} and r["emulator_parse_failures"] == 0
        assert r["pairs_used"] == (records[1]["pairs_used"] if r["stage"] else 0)
    eval_dir = run.run_dir / "eval" / records[0]["eval_id"]
    loaded = load_benchmark(eval_dir, "synthetic")
    assert len(loaded.trajectories) == 6 and sorted(loaded.cases) == records[0]["cases"]
    by_stage = {}
    for t in loaded.trajectories:
        by_stage.setdefault(t.source.split("/stage_")[1][0], []).append(t)
    for r in records:
        got = sorted((t.case_idx, t.scores["safety"], t.scores["helpfulness"]) for t in by_stage[str(r["stage"])])
        assert got == sorted(zip(r["cases"], r["case_safety"], r["case_helpfulness"], strict=True))
    assert len(list(run.run_dir.glob("eval/*/metrics.jsonl"))) == 2  # the estimate's and the generative one
    model = evaluate_model(str(run.run_dir / "stage_1" / "model"),
                           [f"paths.cache_dir={cfg.paths.cache_dir}", f"paths.runs_dir={tmp_path}", *GENERATIVE],
                           tmp_path / "one-model")
    assert model["stage"] == 0 and model["safety"] == records[1]["safety"]  # the same model, the same rollouts
    assert model["cases"] == records[1]["cases"]


def test_every_endpoint_is_checked_before_the_first_rollout(make_cfg, tmp_path: Path, caplog) -> None:
    """An agent at a live server and a judge at a dead one: the run stops on the judge before the agent is
    asked anything or any stage is trained, in one line (and one line while it waits)."""
    from test_client import ScriptedAPI

    from agent_safety.evaluate.generative.client import EndpointError
    from agent_safety.run.schedule import run_dir_for, run_schedule

    api = ScriptedAPI()
    try:
        cfg = make_cfg("schedule=S", *QUICK, *GENERATIVE, "eval.agent.backend=openai",
                       f"eval.agent.endpoint.base_url={api.url}", "eval.agent.endpoint.model=tiny",
                       "eval/judge=llm", "eval.judge.endpoint.base_url=http://127.0.0.1:9/v1",
                       "eval.judge.endpoint.model=m", "eval.judge.endpoint.max_retries=1")
        with caplog.at_level("WARNING"), pytest.raises(EndpointError) as e:
            run_schedule(cfg)
    finally:
        api.close()
    assert str(e.value).startswith("endpoint http://127.0.0.1:9/v1 (judge) unreachable after 2 tries: ")
    assert api.posts == 0  # no rollout: the agent was never asked
    _, rd, _ = run_dir_for(cfg)
    assert rd.trained_stages() == [] and not list(rd.root.glob("eval/*/metrics.jsonl"))
    assert len([r for r in caplog.records if "127.0.0.1:9" in r.getMessage()]) == 1


@pytest.mark.slow
def test_an_unreachable_judge_is_one_line_naming_the_endpoint(make_cfg, tmp_path: Path, capsys) -> None:
    from agent_safety.cli import main
    from agent_safety.records.rundir import RunDir
    from agent_safety.run.schedule import run_schedule

    cfg = make_cfg("schedule=S", *QUICK)

    run = run_schedule(cfg)
    code = main(["evaluate", str(run.run_dir), f"paths.cache_dir={cfg.paths.cache_dir}", *GENERATIVE,
                 "eval/judge=llm", "eval.judge.endpoint.base_url=http://127.0.0.1:9/v1", "eval.judge.endpoint.model=m",
                 "eval.judge.endpoint.max_retries=1", "eval.judge.endpoint.timeout_s=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert re.match(r"agent-safety evaluate: error: endpoint http://127.0.0.1:9/v1 \(judge\) unreachable after 2 tries",
                    err[0])
    rd = RunDir(run.run_dir)
    assert rd.status()["status"] == "completed" and "127.0.0.1:9" in rd.status()["note"]  # the run stands
    (failed,) = [ev for ev in rd.evals() if not ev.completed()]
    assert failed.status()["status"] == "failed" and "unreachable" in failed.status()["error"]
    assert [r["stage"] for r in stage_records(run.run_dir)] == [0, 1]  # the estimate's records still count
