"""Who scores a trajectory 0-3 for safety (ToolCallRisk) and helpfulness ignoring safety (Helpfulness).

:class:`RuleJudge` is the synthetic benchmark's rule judges, reading the episode as the published records
are read; :class:`LLMJudge` asks an LLM, as the study did, with replicates combined by median and a
reply without a score retried and then counted as a parse failure, never given a made-up score.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent_safety.agent.episode import Episode, Verdict
from agent_safety.agent.parsing import parse_judge_reply
from agent_safety.data.synthetic.judges import (
    GROUND_TRUTH_KEY,
    HELPFULNESS_LABELS,
    SAFETY_LABELS,
    judge_helpfulness,
    judge_safety,
)
from agent_safety.evaluate.generative.client import ChatRequest, Endpoint
from agent_safety.evaluate.generative.emulator import case_toolkits, require_endpoint

if TYPE_CHECKING:
    from agent_safety.agent.parsing import JudgeReply
    from agent_safety.agent.prompts import Prompts
    from agent_safety.evaluate.generative.client import Endpoint, Usage

METRICS = ("safety", "helpfulness")


class Judge(Protocol):
    label: str
    """The judge's name in the published layout (``data/raw_data_by_eval/<label>/``)."""

    def judge(self, episodes: list[Episode], metric: str) -> list[Verdict]:
        """One verdict per episode on ``metric`` (``safety`` or ``helpfulness``)."""
        ...


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown judge metric {metric!r}; expected one of {METRICS}")


class RuleJudge:
    """The synthetic benchmark's rule judges (``eval.judge.kind=rule``): deterministic, one replicate, the
    published labels, and the same scores the generated eval files hold for the same trajectory."""

    endpoint = None

    def __init__(self, label: str = "synthetic") -> None:
        self.label = label

    def judge(self, episodes: list[Episode], metric: str) -> list[Verdict]:
        _check_metric(metric)
        rule, labels = ((judge_safety, SAFETY_LABELS) if metric == "safety"
                        else (judge_helpfulness, HELPFULNESS_LABELS))
        check_synthetic([e.case for e in episodes])
        verdicts = []
        for episode in episodes:
            score, why = rule(episode.case, episode.to_record())
            verdicts.append(Verdict(score=score, label=labels[score], thought=why,
                                    summary=f"{labels[score]}: {_first_clause(why)}", replicates=[score]))
        return verdicts


def check_synthetic(cases: list[Mapping[str, Any]]) -> None:
    """The rule judges read each case's hidden ground truth: one line, before any scoring, when one lacks it."""
    from agent_safety.config.validate import ConfigError

    for case in cases:
        if GROUND_TRUTH_KEY not in case:
            raise ConfigError(f"eval.judge.kind=rule needs the synthetic benchmark (data.source=synthetic): case "
                              f"{case.get('name')!r} has no {GROUND_TRUTH_KEY!r}; use eval.judge.kind=llm with an "
                              "endpoint")


def _first_clause(text: str, limit: int = 200) -> str:
    clause = text.split("; ")[0].rstrip(".") + "."
    return clause if len(clause) <= limit else clause[:limit - 3] + "..."


class LLMJudge:
    """An LLM judge on an OpenAI-compatible endpoint (``eval.judge.kind=llm``).

    Each episode is asked ``cfg.replicates`` times at the endpoint's temperature (replicate index r, so each
    is its own cache entry). A reply with no score is asked again at ``cfg.retry_temperature``, up to
    ``cfg.max_parse_retries`` times, each retry under a replicate index of its own
    (``attempt * replicates + r``), so a retry is never answered from the cache with the reply it replaces.
    Every attempt round sends all episodes' open replicates in one batch.
    """

    def __init__(self, cfg: Any, endpoint: Endpoint, prompts: Prompts, toolkits: Mapping[str, Mapping[str, Any]]):
        self.cfg = cfg
        self.label = str(cfg.label)
        self.endpoint = endpoint
        self.prompts = prompts
        self.toolkits = dict(toolkits)
        if int(cfg.replicates) < 1 or int(cfg.max_parse_retries) < 0:
            raise ValueError(f"eval.judge.replicates must be >= 1 and eval.judge.max_parse_retries >= 0 "
                             f"(got {cfg.replicates}, {cfg.max_parse_retries})")

    @property
    def usage(self) -> Usage:
        """Requests and tokens this judge's endpoint used in this process (cached answers counted apart)."""
        return self.endpoint.usage

    def judge(self, episodes: list[Episode], metric: str) -> list[Verdict]:
        _check_metric(metric)
        view = str(getattr(self.cfg, "view", "project"))
        messages = [self.prompts.judge(metric, e.case, case_toolkits(e.case, self.toolkits), e, view)
                    for e in episodes]
        replies = self._ask(messages, metric)
        return [_verdict(r, metric) for r in replies]

    def _ask(self, messages: list[list[dict[str, str]]], metric: str) -> list[list[JudgeReply]]:
        """Each episode's replicates' final replies (parsed, or the last unparseable one)."""
        n_rep = int(self.cfg.replicates)
        replies: list[list[Any]] = [[None] * n_rep for _ in messages]
        pending = [(i, r) for i in range(len(messages)) for r in range(n_rep)]
        max_tokens = int(self.cfg.endpoint.max_tokens)
        for attempt in range(int(self.cfg.max_parse_retries) + 1):
            if not pending:
                break
            temperature = float(self.cfg.endpoint.temperature if attempt == 0 else self.cfg.retry_temperature)
            requests = [ChatRequest(messages[i], temperature=temperature, max_tokens=max_tokens,
                                    replicate=attempt * n_rep + r) for i, r in pending]
            desc = f"{metric} judge" + (f" (retry {attempt})" if attempt else "")
            results = self.endpoint.complete(requests, desc=desc)
            retry = []
            for (i, r), result in zip(pending, results, strict=True):
                replies[i][r] = parse_judge_reply(result.text, metric)
                if replies[i][r].score is None:
                    retry.append((i, r))
            pending = retry
        return replies


def _verdict(replies: list[JudgeReply], metric: str) -> Verdict:
    """Median of the parsed replicates; the words of the first parsed one (or of the last reply). A parsed
    reply that gave a score but no label gets the published label of its score."""
    scores = [r.score for r in replies]
    parsed = [r for r in replies if r.score is not None]
    shown = parsed[0] if parsed else replies[-1]
    median = statistics.median([s for s in scores if s is not None]) if parsed else None
    label = shown.label
    if not label and shown.score is not None:
        label = (SAFETY_LABELS if metric == "safety" else HELPFULNESS_LABELS).get(shown.score, "")
    return Verdict(score=median, label=label, thought=shown.thought, summary=shown.summary,
                   replicates=scores, parse_failures=len(replies) - len(parsed))


def make_judge(eval_cfg: Any, toolkits: Mapping[str, Mapping[str, Any]], prompts: Prompts, cache_dir: Path,
               data_cfg: Any = None) -> Judge:
    """The judge ``eval.judge.kind`` names: ``rule`` (synthetic benchmark) or ``llm``. With ``data_cfg``, a rule
    judge on another benchmark fails here rather than after the rollouts (it fails then in any case)."""
    from agent_safety.config.validate import ConfigError

    cfg = eval_cfg.judge
    if cfg.kind == "rule":
        if data_cfg is not None and data_cfg.source != "synthetic":
            raise ConfigError("eval.judge.kind=rule needs the synthetic benchmark (data.source=synthetic); "
                              "use eval.judge.kind=llm with an endpoint")
        return RuleJudge(str(cfg.label))
    if cfg.kind == "llm":
        require_endpoint(cfg.endpoint, "eval.judge.endpoint")
        return LLMJudge(cfg, Endpoint(cfg.endpoint, Path(cache_dir), role="judge"), prompts, toolkits)
    raise ConfigError(f"eval.judge.kind={cfg.kind!r}: expected 'rule' or 'llm'")
