"""Conversational DPO examples from ToolEmu cases and trajectories, and their tokenisation.

Two formats (``data.pair_format``):

- ``study``: the prompt is a system message (the agent's role, the ReAct format and the case's tools) plus
  the user instruction; the completion is the agent's steps as alternating assistant messages (thought,
  action, action input) and user ``Observation: ...`` messages, ending with the final answer.
- ``agent``: the prompt is the generative evaluation's agent prompt (``Prompts.agent``, empty scratchpad,
  the schema's user settings); the completion is the whole trajectory as one assistant message, written as
  the rollout's scratchpad writes it (each turn, then ``Observation: ...``), ending with the final answer.
  Its start is exactly what the rollout's first turn generates, so preferences learnt on it act on the
  agent's behaviour in the generative evaluation. The tiny agent, cloned on that prompt, needs it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_safety.agent.episode import Episode, Step
from agent_safety.agent.prompts import Prompts
from agent_safety.data.toolemu import Benchmark, Trajectory
from agent_safety.store.cache import cached_arrays, key, ragged, tokenizer_key, unragged

Message = dict[str, str]
#: Bump when the rendering of prompts or completions changes, so cached tokenisations are rebuilt.
FORMAT_VERSION = "1"
PAIR_FORMATS = ("study", "agent")
_THINK = re.compile(r"<think>.*?(</think>|$)\s*", re.S)
#: Reasoning models whose log starts inside the block: everything up to an unopened ``</think>``.
_UNOPENED_THINK = re.compile(r"^(?:(?!<think>).)*</think>\s*", re.S)

SYSTEM_PROMPT = """You are a helpful and careful assistant that acts on the user's behalf by calling tools.
Work step by step in this format:
Thought: your reasoning about what to do next
Action: the tool to call, exactly one of the tool names below
Action Input: a JSON object with the tool's arguments
You then receive "Observation: ..." with the tool's output. Repeat as needed, and end with
Final Answer: your answer to the user
Tools you can call:
{tools}"""


def strip_reasoning(text: str) -> str:
    """Drop ``<think>...</think>`` blocks: the study trained on the visible steps only."""
    return _THINK.sub("", _UNOPENED_THINK.sub("", text)).strip()


def _fields(items: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{p['name']} ({p.get('type', 'any')})" for p in items) or "none"


def tool_listing(toolkits: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> str:
    """One line per tool of the named toolkits, with its arguments and returns."""
    lines = []
    for name in names:
        kit = toolkits.get(name)
        if kit is None:
            continue
        prefix = kit.get("name_for_model", name)
        for tool in kit.get("tools", []):
            lines.append(f"- {prefix}{tool['name']}: {tool.get('summary', '').strip()} "
                         f"Arguments: {_fields(tool.get('parameters', []))}. "
                         f"Returns: {_fields(tool.get('returns', []))}.")
    return "\n".join(lines)


def prompt_messages(case: Mapping[str, Any], toolkits: Mapping[str, Mapping[str, Any]]) -> list[Message]:
    system = SYSTEM_PROMPT.format(tools=tool_listing(toolkits, case.get("Toolkits", [])))
    return [{"role": "system", "content": system}, {"role": "user", "content": case["User Instruction"]}]


def completion_messages(trajectory: Trajectory) -> list[Message]:
    messages: list[Message] = []
    for step in trajectory.steps:
        thought = strip_reasoning(step.thought)
        if "Action:" not in thought:  # some logs hold only the thought; the call is in tool/tool_input
            thought = f"{thought}\nAction: {step.tool}\nAction Input: {strip_reasoning(str(step.tool_input))}".strip()
        messages.append({"role": "assistant", "content": thought})
        # emulated observations sometimes echo the agent's reasoning back; strip it there too
        messages.append({"role": "user", "content": f"Observation: {strip_reasoning(step.observation)}"})
    final = strip_reasoning(trajectory.final)
    if "Final Answer:" not in final:
        final = f"Final Answer: {final}"
    messages.append({"role": "assistant", "content": final})
    return messages


def agent_prompt_messages(case: Mapping[str, Any], toolkits: Mapping[str, Mapping[str, Any]],
                          template: str | None = None, *, prompts: Any = None) -> list[Message]:
    """The agent prompt of the rollout's first turn (``pair_format=agent``), from the evaluation's agent
    template (``eval.agent.template``; None: the project's), or from ``prompts`` already loaded."""
    from agent_safety.config.schema import AgentConfig

    kits = [toolkits[name] for name in case.get("Toolkits", []) if name in toolkits]
    return (prompts or Prompts.load(template)).agent(case, kits, "", AgentConfig())


def agent_completion_messages(trajectory: Trajectory) -> list[Message]:
    """The whole trajectory as one assistant message, in the rollout scratchpad's layout (``pair_format=agent``)."""
    episode = Episode(trajectory.case_idx, {})
    for step in trajectory.steps:
        log = step.thought
        if "Action:" not in log:
            log = f"{log}\nAction: {step.tool}\nAction Input: {step.tool_input}".strip()
        episode.steps.append(Step(log, step.tool, str(step.tool_input), step.observation))
    final = trajectory.final.strip()
    if "Final Answer:" not in final:
        final = f"Final Answer: {final}"
    return [{"role": "assistant", "content": episode.scratchpad() + final}]


def check_pair_format(pair_format: str) -> None:
    if pair_format not in PAIR_FORMATS:
        raise ValueError(f"data.pair_format={pair_format!r}: choose one of {', '.join(PAIR_FORMATS)}")


def example_messages(pair_format: str, template: str | None = None) -> tuple[Any, Any]:
    """(prompt builder, completion builder) of a pair format; ``template`` is the agent format's."""
    check_pair_format(pair_format)
    if pair_format == "agent":
        prompts = Prompts.load(template)  # once, not once per case (10 ms each)

        def prompt(case: Mapping[str, Any], toolkits: Mapping[str, Mapping[str, Any]]) -> list[Message]:
            return agent_prompt_messages(case, toolkits, prompts=prompts)

        return prompt, agent_completion_messages
    return prompt_messages, completion_messages


def _render(tokenizer: Any, messages: list[Message], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


@dataclass
class Tokenized:
    """Token ids of every case's prompt and every trajectory's completion, computed once."""

    prompt_ids: dict[int, list[int]]
    """Case index -> prompt ids (ending with the assistant turn's opening)."""
    completion_ids: list[list[int]]
    """Parallel to ``Benchmark.trajectories``."""
    fmt: str = ""
    """The pair format's key (``format_key``; empty for ``study``): caches built on these lengths name it."""
    completion_masks: list[list[int]] | None = None
    """Parallel to ``completion_ids`` with ``data.mask_observations``: 1 on a token the agent writes, 0 on one
    inside a tool's observation."""

    def length(self, traj_index: int, case_idx: int) -> int:
        return len(self.prompt_ids[case_idx]) + len(self.completion_ids[traj_index])


def observation_spans(text: str, observations: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of the steps' observations in a rendered completion, found in order (as rendered: raw, or
    with reasoning stripped as the study format writes them)."""
    spans, pos = [], 0
    for obs in observations:
        for form in (obs, strip_reasoning(obs)):
            start = text.find(form, pos) if form else -1
            if start >= 0:
                spans.append((start, start + len(form)))
                pos = start + len(form)
                break
    return spans


def agent_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """1 for each token the agent writes, 0 for a token wholly inside an observation span (both sorted)."""
    mask, k = [], 0
    for start, end in offsets:
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        inside = k < len(spans) and spans[k][0] <= start and end <= spans[k][1]
        mask.append(0 if inside else 1)
    return mask


def tokenize_benchmark(tokenizer: Any, bench: Benchmark, cases: Sequence[int] | None = None,
                       pair_format: str = "study", template: str | None = None,
                       mask_observations: bool = False) -> Tokenized:
    """Tokenise each prompt and completion once; pairs and the estimate index into the result.

    The completion is the text the chat template adds after the prompt's generation header, so
    training and scoring see exactly what a chat model would at inference. With ``mask_observations`` each
    completion also gets the mask of the tokens the agent wrote (``Tokenized.completion_masks``).
    """
    prompt_messages, completion_messages = example_messages(pair_format, template)
    keep = set(bench.cases) if cases is None else set(cases)
    prompts = {c: prompt_messages(bench.cases[c], bench.toolkits) for c in sorted(keep) if c in bench.cases}
    prompt_text = {c: _render(tokenizer, m, True) for c, m in prompts.items()}
    completion_text = []
    for t in bench.trajectories:
        if t.case_idx not in prompts:
            completion_text.append("")
            continue
        full = _render(tokenizer, prompts[t.case_idx] + completion_messages(t), False)
        head = prompt_text[t.case_idx]
        if not full.startswith(head):
            raise ValueError(f"{t.source}: the chat template renders the prompt differently inside the "
                             "conversation; cannot split prompt and completion")
        completion_text.append(full[len(head):])
    enc = tokenizer(list(prompt_text.values()), add_special_tokens=False)["input_ids"]
    prompt_ids = dict(zip(prompt_text, enc, strict=True))
    completions = tokenizer(completion_text, add_special_tokens=False, return_offsets_mapping=mask_observations)
    masks = None
    if mask_observations:
        masks = [agent_token_mask(offsets, observation_spans(text, [s.observation for s in t.steps]))
                 for t, text, offsets in zip(bench.trajectories, completion_text, completions["offset_mapping"],
                                             strict=True)]
    return Tokenized(prompt_ids=prompt_ids, completion_ids=list(completions["input_ids"]),
                     fmt=format_key(pair_format, template), completion_masks=masks)


def format_key(pair_format: str, template: str | None = None) -> str:
    """What defines a format's rendering: for ``agent``, the agent template and its settings too. The study
    format's key is empty (its caches predate the choice)."""
    check_pair_format(pair_format)
    if pair_format == "study":
        return ""
    from agent_safety.config.schema import AgentConfig

    source = Prompts.load(template)._sources["agent"][0]
    s = AgentConfig()
    return key(format=pair_format, template=source, user=[s.user_name, s.user_email, s.current_time])


def cached_tokenize(tokenizer: Any, bench: Benchmark, cache_dir: str | Path, pair_format: str = "study",
                    template: str | None = None, mask_observations: bool = False) -> Tokenized:
    """``tokenize_benchmark``, computed once per data x tokenizer x prompt format and reused by every run."""
    import numpy as np

    pair_key = format_key(pair_format, template)  # loads the agent template: once per call
    fmt = key(system=SYSTEM_PROMPT, think=_THINK.pattern, unopened=_UNOPENED_THINK.pattern, version=FORMAT_VERSION)
    if pair_format != "study":
        fmt = key(base=fmt, pair_format=pair_key)
    masked = {"masks": True} if mask_observations else {}  # the unmasked files keep their names
    path = (Path(cache_dir) / "tokenized"
            / f"{key(data=bench.fingerprint, tok=tokenizer_key(tokenizer), fmt=fmt, **masked)}.npz")

    def compute() -> dict[str, Any]:
        t = tokenize_benchmark(tokenizer, bench, pair_format=pair_format, template=template,
                               mask_observations=mask_observations)
        cases = sorted(t.prompt_ids)
        p, c = ragged([t.prompt_ids[k] for k in cases]), ragged(t.completion_ids)
        out = {"cases": np.array(cases, dtype=np.int64), "prompt_values": p["values"],
               "prompt_offsets": p["offsets"], "completion_values": c["values"], "completion_offsets": c["offsets"]}
        if t.completion_masks is not None:
            out["mask_values"] = ragged(t.completion_masks)["values"]  # the completions' offsets hold for it
        return out

    a = cached_arrays(path, compute)
    prompts = unragged(a["prompt_values"], a["prompt_offsets"])
    masks = unragged(a["mask_values"], a["completion_offsets"]) if mask_observations else None
    return Tokenized(prompt_ids=dict(zip(a["cases"].tolist(), prompts, strict=True)),
                     completion_ids=unragged(a["completion_values"], a["completion_offsets"]),
                     fmt=pair_key, completion_masks=masks)


def decode_example(tokenizer: Any, tokenized: Tokenized, bench: Benchmark, chosen: int, rejected: int) -> str:
    """Human-readable dry run of one pair: exactly the tokens the trainer sees."""
    case = bench.trajectories[chosen].case_idx
    meta = {"case_idx": case, "chosen": bench.trajectories[chosen].source,
            "rejected": bench.trajectories[rejected].source,
            "chosen_scores": bench.trajectories[chosen].scores,
            "rejected_scores": bench.trajectories[rejected].scores}
    return "\n".join([
        json.dumps(meta, indent=1),
        "=== PROMPT ===", tokenizer.decode(tokenized.prompt_ids[case]),
        "=== CHOSEN ===", tokenizer.decode(tokenized.completion_ids[chosen]),
        "=== REJECTED ===", tokenizer.decode(tokenized.completion_ids[rejected]),
    ])
