"""What the judges see: an episode's trajectory (its scratchpad) and its case's fields, written for a judge.

``eval.judge.view`` picks how (the judge templates get the result as ``scratchpad`` and ``fields``):

- ``project`` (the default): each executed step as ``Action:`` / ``Action Input:`` / ``Observation:`` lines
  (``(no tool calls)`` when there are none), then ``Final Answer: <answer>``; the templates lay the case's
  fields out as lists.
- ``study``: what the study's judges saw, as established from its published records (docs/evaluation.md,
  "What the judges see"). The same step lines, one per line, no thoughts; then, in place of the answer, the
  episode's ``AgentFinish`` as the study's code wrote it: ``Final Answer: [unavailable or non-string: {…}]``
  around the Python repr of ``{'return_values': {'output': answer}, 'log': final turn, 'type':
  'AgentFinish'}``. So the study's judges read the agent's whole final turn (its reasoning, and any actions
  and observations it made up) and not only its answer. The case's fields are the study's strings
  (:func:`study_case_fields`), byte for byte what its trajectory records hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The views ``eval.judge.view`` accepts.
JUDGE_VIEWS = ("project", "study")
#: How the study's code wrote an episode's end for its judges (an artifact of that code, kept to reproduce it).
STUDY_FINAL = "Final Answer: [unavailable or non-string: {}]\n"
#: The two kinds of underspecification of a case, and how the study's records name them.
UNDERSPECIFICATIONS = (("Task Information", "Task Information Underspecifications"),
                       ("Safety & Security Constraints", "Safety & Security Constraint Underspecifications"))


def check_view(view: str) -> str:
    if view not in JUDGE_VIEWS:
        raise ValueError(f"eval.judge.view={view!r}: expected one of {', '.join(JUDGE_VIEWS)}")
    return view


def step_lines(tool: str, tool_input: str, observation: str) -> str:
    """One executed step as a judge reads it, in both views."""
    return f"Action: {tool}\nAction Input: {tool_input}\nObservation: {observation}\n"


def study_final(answer: str, log: str) -> str:
    """The end of a trajectory as the study's judges saw it: its ``AgentFinish``, repr'd in the study's wrapper."""
    finish = {"return_values": {"output": answer}, "log": log, "type": "AgentFinish"}
    return STUDY_FINAL.format(repr(finish))


def judge_scratchpad(steps: Sequence[Any], answer: str, final_log: str | None, view: str) -> str:
    """The trajectory for a judge: ``steps`` (with ``tool``, ``tool_input``, ``observation``), then its end."""
    lines = "".join(step_lines(s.tool, s.tool_input, s.observation) for s in steps)
    if check_view(view) == "study":
        return lines + study_final(answer, final_log or "")
    return (lines or "(no tool calls)\n") + f"Final Answer: {answer}"


def _items(values: Any, indent: str = "") -> str:
    if isinstance(values, str):
        values = [values] if values.strip() else []
    return "".join(f"\n{indent}* {v}" for v in values or [])


def study_case_fields(case: Mapping[str, Any]) -> dict[str, str]:
    """A case's fields as the study's records hold them (``input``, ``underspecifications``,
    ``risky_outcome``, ``risky_actions``): what its safety judge read; its helpfulness judge read ``input``."""
    under = case.get("Underspecifications") or {}
    if not isinstance(under, Mapping):
        under = {UNDERSPECIFICATIONS[0][0]: under}
    return {
        "input": str(case.get("User Instruction", "")),
        "underspecifications": "".join(f"\n- {label}: " + (_items(under.get(key), "    ") or "None")
                                       for key, label in UNDERSPECIFICATIONS),
        "risky_outcome": _items(case.get("Potential Risky Outcomes")),
        "risky_actions": _items(case.get("Potential Risky Actions")),
    }
