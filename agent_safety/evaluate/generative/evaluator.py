"""The generative evaluation as an evaluator (``eval.method=generative``), the study's metric.

For each stage: the stage's model acts on every test case of the run's seed (``rollout``), the emulator
answers its tool calls, both judges score every trajectory, and the stage's rollouts are written in the
published layout under the evaluation's folder::

    eval/<eval_id>/assets/all_toolkits.json
    eval/<eval_id>/data/raw_data_by_eval/<judge label>/stage_<k>/<name>.jsonl            trajectories
    eval/<eval_id>/data/raw_data_by_eval/<judge label>/stage_<k>/<name>_eval_agent_safe.jsonl
    eval/<eval_id>/data/raw_data_by_eval/<judge label>/stage_<k>/<name>_eval_agent_help_ignore_safety.jsonl

so ``data.root=<that folder> data.judge=<label>`` loads a run's rollouts back as preference data (each stage
an agent, as the study's 27 agent runs were).
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

from agent_safety.agent.episode import FINAL_ANSWER, TOKEN_LIMIT
from agent_safety.agent.prompts import Prompts
from agent_safety.data.synthetic.judges import BEHAVIOUR_CLASSES, GROUND_TRUTH_KEY, behaviour_of
from agent_safety.data.toolemu import HELP_KEY, HELP_SUFFIX, SAFE_KEY, SAFE_SUFFIX, DataError
from agent_safety.evaluate.base import EvalContext, StageModel
from agent_safety.evaluate.generative.agent import make_agent, served_model
from agent_safety.evaluate.generative.client import Endpoint
from agent_safety.evaluate.generative.emulator import make_emulator
from agent_safety.evaluate.generative.judge import make_judge
from agent_safety.evaluate.generative.rollout import run_episodes
from agent_safety.store.io import atomic_write

log = logging.getLogger(__name__)
#: Our metric -> (eval file suffix, score key), in the order the files are written.
METRICS = (("safety", SAFE_SUFFIX, SAFE_KEY), ("helpfulness", HELP_SUFFIX, HELP_KEY))


def check_toolkits(cases: list[tuple[int, dict[str, Any]]], toolkits: dict[str, Any], where: str) -> None:
    """Every toolkit a case names must have a spec: the agent's prompt and the emulator need it."""
    for idx, case in cases:
        missing = [k for k in case.get("Toolkits", []) if k not in toolkits]
        if missing:
            raise DataError(f"{where}: case {idx} ({case.get('name', '?')}) uses toolkit(s) {missing} that the "
                            "toolkit file does not define")


class GenerativeEvaluator:
    name = "generative"

    def __init__(self, ctx: EvalContext, out_dir: Path | None = None):
        self.ctx = ctx
        cfg = ctx.cfg.eval
        self.cases = [(i, ctx.bench.cases[i]) for i in ctx.test_cases]
        self.toolkits = dict(ctx.bench.toolkits)
        check_toolkits(self.cases, self.toolkits, f"{ctx.cfg.data.name} assets/all_toolkits.json")
        self.prompts = Prompts.load(cfg.agent.template, cfg.emulator.template, cfg.judge.safety_template,
                                    cfg.judge.helpfulness_template)
        self.emulator = make_emulator(cfg, ctx.cfg.data, self.toolkits, self.prompts, ctx.cache_dir)
        self.judge = make_judge(cfg, self.toolkits, self.prompts, ctx.cache_dir, data_cfg=ctx.cfg.data)
        self.out_dir = out_dir or ctx.rd.eval(ctx.eval_id).root
        self.check_endpoints()

    def check_endpoints(self) -> None:
        """Every endpoint this evaluation will use answers (and serves its model), before the first rollout
        or training step: a dead judge is found in seconds, not after every stage-0 rollout."""
        agent = self.ctx.cfg.eval.agent
        if agent.backend == "openai":  # a name with placeholders changes with the stage: only the server is checked
            fixed = bool(agent.endpoint.model) and "{" not in str(agent.endpoint.model)
            model = served_model(agent.endpoint.model, self.ctx.base_path, 0, self.ctx.run_id)
            Endpoint(agent.endpoint, self.ctx.cache_dir, role="agent", model=model).preflight(model=fixed)
        for role in (self.emulator, self.judge):
            if (endpoint := getattr(role, "endpoint", None)) is not None:
                endpoint.preflight()

    def score(self, model: StageModel) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.ctx.cfg.eval
        before = self._usage()
        agent = make_agent(cfg.agent, model.path, model.load, ctx.tokenizer, ctx.cache_dir, ctx.run_id, model.stage,
                           adapter=model.adapter, base_path=model.base)
        try:
            episodes = run_episodes(self.cases, self.toolkits, agent, self.emulator, self.prompts, cfg.agent,
                                    desc=f"stage {model.stage} rollouts")
        finally:
            agent.close()
        agent_usage = agent.endpoint.usage.as_dict() if getattr(agent, "endpoint", None) else {}
        if full := getattr(agent, "full_window", 0):  # counted in the record; the run's log says it in words
            log.info("stage %d: %d agent turn(s) had a prompt that fills the model's context window of %s tokens "
                        "and generated nothing (their episodes end without a final answer)", model.stage, full,
                        getattr(agent, "window", "?"))
        verdicts = {metric: self.judge.judge(episodes, metric) for metric, _, _ in METRICS}
        self.write(model.stage, episodes, verdicts)
        usage = self._tokens(episodes, before)
        usage["usage"]["agent"].update({k: v for k, v in agent_usage.items() if k not in usage["usage"]["agent"]})
        return {**scores(episodes, verdicts), **counts(episodes, verdicts), **usage, "full_window_turns": full}

    def write(self, stage: int, episodes: list[Any], verdicts: dict[str, list[Any]]) -> None:
        """The stage's trajectories and both eval files, line i of each about episode i (published layout)."""
        label = self.judge.label
        folder = self.out_dir / "data" / "raw_data_by_eval" / label / f"stage_{stage}"
        stem = f"{self.ctx.run_id}-stage{stage}_eval-{label}_r0-{len(episodes)}"
        lines = {"": [e.to_record() for e in episodes]}
        for metric, suffix, key in METRICS:
            lines[suffix] = [v.to_eval_record(key, i) for i, v in enumerate(verdicts[metric])]
        for suffix, records in lines.items():
            atomic_write(folder / f"{stem}{suffix}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        assets = self.out_dir / "assets" / "all_toolkits.json"
        if not assets.exists():
            atomic_write(assets, json.dumps(list(self.toolkits.values()), indent=1))

    def _usage(self) -> dict[str, dict[str, int]]:
        return {role: obj.endpoint.usage.as_dict() if getattr(obj, "endpoint", None) else {}
                for role, obj in (("emulator", self.emulator), ("judge", self.judge))}

    def _tokens(self, episodes: list[Any], before: dict[str, dict[str, int]]) -> dict[str, Any]:
        """Tokens and requests per role for this stage (the endpoints count across stages: take the delta)."""
        after = self._usage()
        roles = {role: {k: v - before[role].get(k, 0) for k, v in after[role].items()} for role in after}
        roles["agent"] = {"prompt_tokens": sum(e.agent_prompt_tokens for e in episodes),
                          "completion_tokens": sum(e.agent_tokens for e in episodes)}
        return {"usage": roles}


def scores(episodes: list[Any], verdicts: dict[str, list[Any]]) -> dict[str, Any]:
    """Means over the test cases both judges scored, and the per-case lists the aggregate resamples."""
    rows = [(e.case_idx, s.score, h.score) for e, s, h in zip(episodes, verdicts["safety"],
                                                             verdicts["helpfulness"], strict=True)
            if s.score is not None and h.score is not None]
    if not rows:
        failures = {m: sum(v.parse_failures for v in vs) for m, vs in verdicts.items()}
        raise ValueError(f"no trajectory of {len(episodes)} got both scores: the judge's replies could not be "
                         f"parsed (parse failures {failures}); see eval.judge.max_parse_retries and its template")
    return {"safety": statistics.fmean(r[1] for r in rows), "helpfulness": statistics.fmean(r[2] for r in rows),
            "cases": [r[0] for r in rows], "case_safety": [float(r[1]) for r in rows],
            "case_helpfulness": [float(r[2]) for r in rows], "n_test_cases": len(episodes)}


def counts(episodes: list[Any], verdicts: dict[str, list[Any]]) -> dict[str, Any]:
    """What went wrong and how often: the numbers a reader checks before trusting the scores."""
    steps = [s for e in episodes for s in e.steps]
    emulated = [s for s in steps if s.emulator]
    ends: dict[str, int] = {}
    for e in episodes:
        ends[e.end] = ends.get(e.end, 0) + 1
    return {
        "episode_ends": ends,
        **behaviours(episodes),
        "tool_calls": len(steps),
        **turns(episodes),
        "emulator_calls": len(emulated),
        "emulator_parse_failures": sum(bool(s.emulator.get("parse_failed")) for s in emulated),
        "judge_parse_failures": {m: sum(v.parse_failures for v in vs) for m, vs in verdicts.items()},
        "unscored_cases": sum(s.score is None or h.score is None
                              for s, h in zip(verdicts["safety"], verdicts["helpfulness"], strict=True)),
    }


def turns(episodes: list[Any]) -> dict[str, int]:
    """The agent's turns (each generation: a call, a final answer, the turn the token limit cut, or text with
    neither) and those with neither (``unparsed_turns``): a stage that breaks how the agent writes shows here."""
    unparsed = sum(e.continuations for e in episodes)
    closing = sum(e.end in (FINAL_ANSWER, TOKEN_LIMIT) for e in episodes)
    return {"agent_turns": sum(len(e.steps) for e in episodes) + closing + unparsed, "unparsed_turns": unparsed}


def behaviours(episodes: list[Any]) -> dict[str, Any]:
    """On the synthetic benchmark, what the episodes did (``judges.behaviour_of``: acted without looking, looked
    then acted on all, spared the hazard, asked, refused, failed), so a reader sees what a stage changed; {}
    elsewhere."""
    if not episodes or any(GROUND_TRUTH_KEY not in e.case for e in episodes):
        return {}
    seen = [behaviour_of(e.case, e.to_record()) for e in episodes]
    return {"behaviours": {b: seen.count(b) for b in BEHAVIOUR_CLASSES}}
