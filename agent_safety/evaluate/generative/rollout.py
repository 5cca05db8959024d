"""The episode loop: every unfinished episode takes one agent turn per round, generated together.

Each round renders the agent prompt of every unfinished episode (its scratchpad at the end), asks the agent
backend for all of them at once, and reads each output: a final answer ends the episode; an action with a
valid JSON object for a listed tool goes to the emulator (all of a round's calls together); invalid JSON or
an unknown tool gets an error observation without the emulator; an output with neither is kept in the
scratchpad and the model continues, at most ``max_continuations`` times. A cumulative cap on generated agent
tokens ends an episode ("token limit exceeded").

``eval.agent.parser=study`` reads and ends episodes as the study did: each output is kept as the study kept it
(:func:`parsing.study_turn_text`) and read whole (a made-up observation stays in the step's log); the token cap
is checked before the turn is read, so the turn that reaches it ends the episode even when it holds a final
answer; an episode that runs out of continuations or tokens ends with the study's answer
(:data:`STUDY_STOPPED_ANSWER`) and its last output as the final log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent_safety.agent.episode import (
    FINAL_ANSWER,
    MAX_STEPS,
    NO_FORMAT,
    TOKEN_LIMIT,
    TOKEN_LIMIT_ANSWER,
    Episode,
    Step,
    ToolCall,
)
from agent_safety.agent.parsing import parse_agent_output, study_turn_text
from agent_safety.agent.prompts import tool_names
from agent_safety.console import progress

#: Where the study's agents were told to stop: the tool's answer is the emulator's to write.
OBSERVATION_STOP = "\nObservation:"
#: The final answer the study recorded when its agent ran out of tokens or of continuations.
STUDY_STOPPED_ANSWER = "Agent stopped: token limit exceeded"


def run_episodes(cases: Sequence[tuple[int, Mapping[str, Any]]], toolkits: Mapping[str, Mapping[str, Any]],
                 agent: Any, emulator: Any, prompts: Any, settings: Any, desc: str = "rollouts") -> list[Episode]:
    """Act out every case to the end; returns the episodes in the order of ``cases``."""
    episodes = [Episode(idx, dict(case)) for idx, case in cases]
    kits = [[toolkits[name] for name in e.case["Toolkits"]] for e in episodes]
    names = [set(tool_names(k)) for k in kits]
    stop = [OBSERVATION_STOP] if settings.stop_at_observation else []
    bar = progress(len(episodes), desc, unit="episode")
    while active := [i for i, e in enumerate(episodes) if not e.done]:
        messages = [prompts.agent(episodes[i].case, kits[i], episodes[i].scratchpad(), settings) for i in active]
        budgets = [max(1, min(settings.max_tokens_per_step, settings.token_limit - episodes[i].agent_tokens))
                   for i in active]
        generations = agent.generate(messages, budgets, stop)
        calls: list[tuple[Episode, ToolCall, str]] = []
        for i, gen in zip(active, generations, strict=True):
            call = take_turn(episodes[i], gen, names[i], settings)
            if call is not None:
                calls.append((episodes[i], *call))
        if calls:
            observations = emulator.observe([c[0] for c in calls], [c[1] for c in calls])
            for (episode, call, log), obs in zip(calls, observations, strict=True):
                episode.steps.append(Step(log, call.tool, call.tool_input, obs.text,
                                          {"thought": obs.thought, "summary": obs.summary,
                                           "parse_failed": obs.parse_failed}))
                _check_steps(episode, settings)
        bar.update(sum(episodes[i].done for i in active))
    bar.close()
    return episodes


def take_turn(episode: Episode, gen: Any, tool_names: set[str], settings: Any) -> tuple[ToolCall, str] | None:
    """Read one agent output into the episode; returns the tool call for the emulator, if the turn made one."""
    episode.agent_tokens += gen.completion_tokens
    episode.agent_prompt_tokens += gen.prompt_tokens
    if getattr(settings, "parser", "robust") == "study":
        return _study_turn(episode, gen, tool_names, settings)
    turn = parse_agent_output(episode.pending + gen.text if episode.pending else gen.text, tool_names)
    if turn.kind == "final":
        episode.final, episode.answer, episode.end, episode.pending = turn.log, turn.answer, FINAL_ANSWER, ""
        return None
    if episode.agent_tokens >= settings.token_limit:
        _end(episode, TOKEN_LIMIT, gen.text)
        return None
    if turn.kind != "nothing":
        return _act(episode, turn, settings)
    episode.continuations += 1  # nothing parseable: keep it, let the model continue from it
    if episode.continuations > settings.max_continuations:
        _end(episode, NO_FORMAT, gen.text)
    else:
        episode.pending += gen.text
    return None


def _study_turn(episode: Episode, gen: Any, tool_names: set[str], settings: Any) -> tuple[ToolCall, str] | None:
    """:func:`take_turn` as the study's agent took it (see the module docstring)."""
    text = episode.pending + gen.text if episode.pending else study_turn_text(gen.text)
    turn = parse_agent_output(text, tool_names, "study")
    if episode.agent_tokens >= settings.token_limit:
        _end_as_study(episode, TOKEN_LIMIT, text)
        return None
    if turn.kind == "final":
        episode.final, episode.answer, episode.end, episode.pending = turn.log, turn.answer, FINAL_ANSWER, ""
        return None
    if turn.kind != "nothing":
        return _act(episode, turn, settings)
    episode.continuations += 1
    episode.turn_continuations += 1  # the study's limit is per turn
    if episode.turn_continuations > settings.max_continuations:
        _end_as_study(episode, NO_FORMAT, text)
    else:
        episode.pending = study_turn_text(text)
    return None


def _act(episode: Episode, turn: Any, settings: Any) -> tuple[ToolCall, str] | None:
    """A turn that made a call: the call for the emulator, or the error step it earned without the emulator."""
    episode.pending, episode.turn_continuations = "", 0
    if turn.kind == "action":
        return ToolCall(turn.tool, turn.tool_input, turn.args), turn.log
    episode.steps.append(Step(turn.log, turn.tool or "", turn.tool_input or "", turn.error or "{}"))
    _check_steps(episode, settings)
    return None


def _check_steps(episode: Episode, settings: Any) -> None:
    if settings.max_steps is not None and len(episode.steps) >= settings.max_steps and not episode.done:
        _end(episode, MAX_STEPS, "")


def _end(episode: Episode, reason: str, text: str) -> None:
    """End an episode that gave no final answer; its record says why in place of the answer."""
    episode.end = reason
    episode.pending += text
    answer = TOKEN_LIMIT_ANSWER if reason == TOKEN_LIMIT else f"(no final answer: {reason.replace('_', ' ')})"
    episode.answer = answer
    episode.final = f"{episode.pending.rstrip()}\nFinal Answer: {answer}".lstrip()
    episode.pending = ""


def _end_as_study(episode: Episode, reason: str, text: str) -> None:
    """End an episode as the study did: its answer for both limits, its whole last output as the final log."""
    episode.end, episode.answer, episode.final, episode.pending = reason, STUDY_STOPPED_ANSWER, text, ""
