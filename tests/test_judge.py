"""The judges: the rule judge scores a rebuilt episode as the published eval files do; the LLM judge's
replicates, retries and parse failures against the local test server, and its cache."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import LLM_MODEL

from agent_safety.agent.episode import FINAL_ANSWER, Episode, Step
from agent_safety.agent.parsing import JudgeReply
from agent_safety.config.validate import ConfigError
from agent_safety.data.synthetic.generator import AGENTS, generate
from agent_safety.data.synthetic.judges import GROUND_TRUTH_KEY, HELPFULNESS_LABELS, SAFETY_LABELS
from agent_safety.data.toolemu import HELP_KEY, HELP_SUFFIX, SAFE_KEY, SAFE_SUFFIX
from agent_safety.evaluate.generative.judge import LLMJudge, RuleJudge, _verdict, make_judge


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic"))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _published(root: Path, agent: str) -> tuple[list[dict], list[dict], list[dict]]:
    stem = root / "data" / "raw_data_by_eval" / "synthetic" / agent / f"{agent}_eval-synthetic_r0-128"
    return (_jsonl(Path(f"{stem}.jsonl")), _jsonl(Path(f"{stem}{SAFE_SUFFIX}.jsonl")),
            _jsonl(Path(f"{stem}{HELP_SUFFIX}.jsonl")))


def episode_from_record(record: dict[str, Any]) -> Episode:
    """An episode as a rollout would have left it, from a trajectory in the published schema."""
    *steps, (finish, _) = record["intermediate_steps"]
    episode = Episode(record["case_idx"], record["case"], final=finish["log"], answer=record["output"],
                      end=FINAL_ANSWER)
    episode.steps = [Step(log, tool, tool_input, observation) for (tool, tool_input, log), (observation, *_) in steps]
    return episode


def test_rule_judge_matches_the_published_eval_files(root: Path) -> None:
    judge = RuleJudge()
    assert judge.label == "synthetic"
    n = 0
    for agent in AGENTS:
        records, safe, helpful = _published(root, agent.name)
        episodes = [episode_from_record(r) for r in records]
        for metric, published, key, labels in (("safety", safe, SAFE_KEY, SAFETY_LABELS),
                                               ("helpfulness", helpful, HELP_KEY, HELPFULNESS_LABELS)):
            verdicts = judge.judge(episodes, metric)
            assert len(verdicts) == len(published)
            for i, (v, p) in enumerate(zip(verdicts, published, strict=True)):
                assert v.score == p["eval_scores"][key] and v.replicates == [v.score] and v.parse_failures == 0
                assert v.label == p["Overall Qualitative Label"] == labels[v.score]
                assert v.thought == p["Evaluator Thought"] and v.summary.startswith(v.label)
                line = v.to_eval_record(key, i)
                assert line["Overall Quantitative Score"] == p["Overall Quantitative Score"]
                assert line["eval_scores"] == {key: [p["eval_scores"][key]]}
                n += 1
    assert n == 2 * 128 * len(AGENTS)


def test_rule_judge_refuses_other_benchmarks(root: Path) -> None:
    record = _published(root, AGENTS[0].name)[0][0]
    episode = episode_from_record(record)
    episode.case = {k: v for k, v in episode.case.items() if k != GROUND_TRUTH_KEY}
    with pytest.raises(ConfigError, match="eval.judge.kind=rule needs the synthetic benchmark"):
        RuleJudge("x").judge([episode], "safety")
    with pytest.raises(ValueError, match="unknown judge metric 'risk'"):
        RuleJudge().judge([], "risk")


def test_verdict_is_the_median_of_parsed_replicates() -> None:
    def reply(score: int | None, label: str = "") -> JudgeReply:
        return JudgeReply(score, label, f"thought {score}", f"summary {score}")

    v = _verdict([reply(None, "?"), reply(1), reply(2, "Good (2)"), reply(3)], "helpfulness")
    assert (v.score, v.replicates, v.parse_failures) == (2, [None, 1, 2, 3], 1)
    assert (v.label, v.thought, v.summary) == ("Unsatisfactory (1)", "thought 1", "summary 1")
    assert _verdict([reply(0), reply(3)], "safety").score == 1.5
    none = _verdict([reply(None, "first"), reply(None, "last")], "safety")
    assert (none.score, none.label, none.parse_failures, none.replicates) == (None, "last", 2, [None, None])
    assert none.to_eval_record(SAFE_KEY, 0)["Overall Quantitative Score"] == ""


def _cfg(kind: str = "rule", label: str = "synthetic", **endpoint: Any) -> SimpleNamespace:
    ep = {"base_url": None, "model": None, "api_key_env": None, "max_concurrency": 4, "timeout_s": 300.0,
          "max_retries": 1, "temperature": 0.0, "max_tokens": 48, "seed": 0, **endpoint}
    return SimpleNamespace(judge=SimpleNamespace(kind=kind, label=label, endpoint=SimpleNamespace(**ep),
                                                 replicates=2, max_parse_retries=1, retry_temperature=0.3,
                                                 safety_template=None, helpfulness_template=None))


def test_make_judge_checks_its_config(tmp_path: Path) -> None:
    judge = make_judge(_cfg("rule", label="mine"), {}, None, tmp_path)
    assert isinstance(judge, RuleJudge) and judge.label == "mine"
    with pytest.raises(ConfigError, match=r"^eval.judge.kind=rule needs the synthetic benchmark"):
        make_judge(_cfg("rule"), {}, None, tmp_path, data_cfg=SimpleNamespace(source="toolemu"))
    with pytest.raises(ConfigError, match=r"^eval.judge.endpoint.base_url is not set"):
        make_judge(_cfg("llm", model="m"), {}, None, tmp_path)
    with pytest.raises(ConfigError, match=r"^eval.judge.endpoint.model is not set"):
        make_judge(_cfg("llm", base_url="http://127.0.0.1:9/v1"), {}, None, tmp_path)
    with pytest.raises(ConfigError, match="eval.judge.kind='human'"):
        make_judge(_cfg("human"), {}, None, tmp_path)
    llm = make_judge(_cfg("llm", label="gpt", base_url="http://127.0.0.1:9/v1", model="m"), {}, None, tmp_path)
    assert isinstance(llm, LLMJudge) and llm.label == "gpt" and llm.endpoint.role == "judge"


# --- the LLM judge against the local test server ---------------------------------------------------------


@pytest.mark.llm
def test_llm_judge_against_the_local_server(llm_url: str, root: Path, tmp_path: Path) -> None:
    """One episode (the server reads a prompt a token at a time), two replicates per metric: every replicate is a
    score 0-3 or a counted parse failure, the verdict is their median, every request (retries included) is its
    own cache entry, and a rerun from the cache sends nothing and gives the same verdicts."""
    from agent_safety.agent.prompts import Prompts

    toolkits = {k["toolkit"]: k for k in json.loads((root / "assets" / "all_toolkits.json").read_text())}
    records = _published(root, AGENTS[0].name)[0]
    episodes = [episode_from_record(records[3])]
    cfg = _cfg("llm", base_url=llm_url, model=LLM_MODEL)

    def run() -> tuple[LLMJudge, dict[str, list[Any]]]:
        judge = make_judge(cfg, toolkits, Prompts.load(), tmp_path / "cache")
        assert isinstance(judge, LLMJudge)
        return judge, {m: judge.judge(episodes, m) for m in ("safety", "helpfulness")}

    judge, verdicts = run()
    n_replicates = 0
    for vs in verdicts.values():
        assert len(vs) == len(episodes)
        for v in vs:
            assert len(v.replicates) == 2
            parsed = [s for s in v.replicates if s is not None]
            assert all(0 <= s <= 3 for s in parsed)
            assert v.parse_failures == 2 - len(parsed)
            assert v.score == (statistics.median(parsed) if parsed else None)
            n_replicates += 2
    failures = sum(v.parse_failures for vs in verdicts.values() for v in vs)
    usage = judge.usage
    assert usage is judge.endpoint.usage and usage.cached == 0  # no retry was answered from the cache
    assert n_replicates + failures <= usage.requests_sent <= 2 * n_replicates  # failures were retried once
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    again, replay = run()
    assert again.usage.requests_sent == 0 and again.usage.cached == usage.requests_sent
    assert replay == verdicts
