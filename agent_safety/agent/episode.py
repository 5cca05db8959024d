"""What a rollout is made of: episodes of tool-calling steps, and what each role returns.

An :class:`Episode` is written out in ToolEmu's trajectory schema (:meth:`Episode.to_record`), the same
schema the data loader reads, so a run's rollouts load back through ``data=`` as new preference data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Why an episode ended.
FINAL_ANSWER, TOKEN_LIMIT, NO_FORMAT, MAX_STEPS = "final_answer", "token_limit", "no_parseable_output", "max_steps"
#: The final answer ToolEmu records when the agent's tokens run out.
TOKEN_LIMIT_ANSWER = "token limit exceeded"


@dataclass
class ToolCall:
    """An action the agent asked for: the tool, the Action Input text, and that text parsed."""

    tool: str
    tool_input: str
    args: dict[str, Any] | None = None


@dataclass
class Step:
    """One executed tool call: the agent's turn up to its Action Input, and the observation it got."""

    log: str
    """The agent's text for this turn (thought, ``Action:``, ``Action Input:``), reasoning blocks kept."""
    tool: str
    tool_input: str
    observation: str
    emulator: dict[str, Any] = field(default_factory=dict)
    """What the emulator said besides the observation (thought, summary, ``parse_failed``); {} for errors the
    agent's own output caused (invalid JSON, unknown tool), which never reach the emulator."""


@dataclass
class Generation:
    """One completion of an agent backend."""

    text: str
    completion_tokens: int
    prompt_tokens: int = 0


@dataclass
class Observation:
    """The emulator's answer to one call."""

    text: str
    """One JSON object as text; ``{}`` when the reply held no parseable observation."""
    thought: str = ""
    summary: str = ""
    parse_failed: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Verdict:
    """A judge's score of one trajectory on one metric, over its replicates."""

    score: float | None
    """Median of the parsed replicates on the 0-3 scale; None when none could be parsed."""
    label: str
    thought: str
    summary: str
    replicates: list[int | None] = field(default_factory=list)
    parse_failures: int = 0
    """Replicates with no parseable score after every retry."""

    def to_eval_record(self, score_key: str, index: int) -> dict[str, Any]:
        """The line of the published eval file (``…_eval_agent_safe.jsonl`` / ``…_help_ignore_safety``)."""
        return {"Evaluator Thought": self.thought, "Overall Qualitative Label": self.label,
                "Overall Quantitative Score": "" if self.score is None else f"{self.score:g}",
                "Evaluator Log Summary": self.summary, "eval_scores": {score_key: self.replicates},
                "eval_id": index, "parse_failures": self.parse_failures}


@dataclass
class Episode:
    """One test case acted out by the agent."""

    case_idx: int
    case: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    pending: str = ""
    """Outputs with neither an action nor a final answer, kept in the scratchpad for the next turn."""
    continuations: int = 0
    turn_continuations: int = 0
    """Continuations of the turn under way (the study's limit counts these; ``continuations`` counts them all)."""
    final: str | None = None
    """The agent's last turn, ending with ``Final Answer: …``."""
    answer: str | None = None
    end: str | None = None
    agent_tokens: int = 0
    """Generated agent tokens so far (the cumulative cap counts these)."""
    agent_prompt_tokens: int = 0

    @property
    def done(self) -> bool:
        return self.end is not None

    def scratchpad(self) -> str:
        """Earlier turns as the agent wrote them, each followed by its observation, then any pending text."""
        parts = [f"{s.log.rstrip()}\nObservation: {s.observation}\n" for s in self.steps]
        return "".join(parts) + self.pending

    def to_record(self) -> dict[str, Any]:
        """The episode in ToolEmu's trajectory schema (what ``data.toolemu.load_benchmark`` reads)."""
        steps: list[Any] = [[[s.tool, s.tool_input, s.log], [s.observation, "", ""]] for s in self.steps]
        answer = self.answer if self.answer is not None else TOKEN_LIMIT_ANSWER
        log = self.final if self.final is not None else f"{self.pending}\nFinal Answer: {answer}".lstrip()
        steps.append([{"return_values": {"output": answer}, "log": log, "type": "AgentFinish"}, ""])
        case = self.case
        return {
            "input": case.get("User Instruction", ""), "case": case, "case_idx": self.case_idx, "output": answer,
            "underspecifications": _bullets(case.get("Underspecifications")),
            "risky_outcome": _bullets(case.get("Potential Risky Outcomes")),
            "risky_actions": _bullets(case.get("Potential Risky Actions")),
            "intermediate_steps": steps, "end": self.end, "agent_tokens": self.agent_tokens,
            "continuations": self.continuations,
        }


def _bullets(value: Any) -> str:
    if isinstance(value, dict):
        return "".join(f"\n- {k}:{_bullets(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "".join(f"\n* {x}" for x in value)
    return "" if value is None else f" {value}"
