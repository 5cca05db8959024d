"""The chat prompts of the agent, the emulator and the two judges, rendered from Jinja2 templates.

The project's templates are ``prompts/{agent,emulator,judge_safety,judge_helpfulness}.j2``, written in our
own words, and ``prompts/agent_compact.j2`` for small models taught the format by behaviour cloning (the
tiny agent). A config value swaps in another: a packaged template by its file name, your own by its path
(``eval.agent.template``, ``eval.emulator.template``, ``eval.judge.safety_template``,
``eval.judge.helpfulness_template``). A template becomes chat messages
through its blocks: ``{% block system %}`` (optional) is the system message and ``{% block user %}`` the
user message; a template with no ``user`` block is rendered whole as one user message. Undefined variables
are errors (StrictUndefined), so a typo in a template fails on its first render, naming the template.

Variables every template gets: ``case`` (the test case without hidden keys such as the synthetic ground
truth), ``input`` (the user instruction), ``underspecifications`` ({kind: [items]}), ``risky_outcomes``,
``risky_actions``, ``expected_achievements`` (lists of strings). Tool specs arrive normalised (see
:func:`toolkit_view`): a toolkit is {name, description, tools}; a tool is {name (as the agent calls it,
e.g. ``TodoistSearchTasks``), summary, parameters [{name, type, description, required}], returns
[{name, type, description}], exceptions [{name, description}]}.

- agent: ``toolkits``, ``tool_names``, ``user`` {name, email}, ``current_time``, ``scratchpad``.
- emulator: ``toolkit``, ``tool``, ``call`` (ToolCall: tool, tool_input), ``steps`` (earlier Steps: use
  their ``tool``, ``tool_input`` and ``observation``, not the agent's ``log``).
- judges: ``toolkits``, ``steps`` (executed Steps), ``final_answer``, ``labels`` ({label: score}).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent_safety.agent.episode import TOKEN_LIMIT_ANSWER, Episode, Step, ToolCall
from agent_safety.agent.parsing import LABELS
from agent_safety.agent.scratchpad import judge_scratchpad, study_case_fields

Message = dict[str, str]
#: Case keys no prompt may show: the synthetic benchmark's hidden state decides its rule judges' scores.
HIDDEN_KEYS = ("Synthetic Ground Truth",)
#: Role -> (default template file, the config key that overrides it).
TEMPLATES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "agent": ("agent.j2", "eval.agent.template"),
    "emulator": ("emulator.j2", "eval.emulator.template"),
    "safety": ("judge_safety.j2", "eval.judge.safety_template"),
    "helpfulness": ("judge_helpfulness.j2", "eval.judge.helpfulness_template"),
})


class PromptError(ValueError):
    """A template that cannot be read or rendered; the message is one line naming it and its config key."""


def toolkit_name(toolkit: Mapping[str, Any]) -> str:
    """The prefix of the toolkit's tool names as the agent calls them."""
    return str(toolkit.get("name_for_model") or toolkit["toolkit"])


def tool_names(toolkits: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every tool of these toolkits, as the agent calls it (toolkit name + tool name)."""
    return [toolkit_name(kit) + tool["name"] for kit in toolkits for tool in kit.get("tools", [])]


def find_tool(toolkits: Sequence[Mapping[str, Any]], name: str) -> tuple[dict, dict] | None:
    """The (toolkit, tool) the agent means by ``name``, or None."""
    for kit in toolkits:
        for tool in kit.get("tools", []):
            if toolkit_name(kit) + tool["name"] == name:
                return dict(kit), dict(tool)
    return None


def tool_view(toolkit: Mapping[str, Any], tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool spec with its full name and every optional key present (upstream omits some)."""
    return {
        "name": toolkit_name(toolkit) + tool["name"], "summary": str(tool.get("summary", "")).strip(),
        "parameters": [{"name": p["name"], "type": p.get("type", "any"), "description": p.get("description", ""),
                        "required": bool(p.get("required"))} for p in tool.get("parameters", [])],
        "returns": [{"name": r["name"], "type": r.get("type", "any"), "description": r.get("description", "")}
                    for r in tool.get("returns", [])],
        "exceptions": [{"name": e["name"], "description": e.get("description", "")}
                       for e in tool.get("exceptions", [])],
    }


def toolkit_view(toolkit: Mapping[str, Any]) -> dict[str, Any]:
    """A toolkit spec as the templates see it: name, short description and normalised tools."""
    description = toolkit.get("description_for_model") or toolkit.get("description_for_human", "")
    return {"name": toolkit_name(toolkit), "description": str(description).strip(),
            "tools": [tool_view(toolkit, t) for t in toolkit.get("tools", [])]}


def _items(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value]


def case_context(case: Mapping[str, Any]) -> dict[str, Any]:
    """What every template may know about a case: everything but the hidden keys."""
    visible = {k: v for k, v in case.items() if k not in HIDDEN_KEYS}
    under = visible.get("Underspecifications") or {}
    if not isinstance(under, Mapping):
        under = {"Other": under}
    return {
        "case": visible, "input": str(visible.get("User Instruction", "")),
        "underspecifications": {str(k): _items(v) for k, v in under.items()},
        "risky_outcomes": _items(visible.get("Potential Risky Outcomes")),
        "risky_actions": _items(visible.get("Potential Risky Actions")),
        "expected_achievements": _items(visible.get("Expected Achievements")),
    }


def _packaged(filename: str) -> Any:
    return importlib.resources.files("agent_safety.agent").joinpath("prompts", filename)


def _read(role: str, path: str | Path | None) -> tuple[str, str]:
    """(source, origin) of a role's template: the user's file when given, a packaged one when named by its
    bare file name (``agent_compact.j2``), else the role's packaged default."""
    filename, key = TEMPLATES[role]
    if path is None or ("/" not in str(path) and _packaged(str(path)).is_file()):
        name = filename if path is None else str(path)
        return _packaged(name).read_text(encoding="utf-8"), f"agent_safety/agent/prompts/{name}"
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise PromptError(f"{key}: no template file at {file}")
    return file.read_text(encoding="utf-8"), str(file)


class Prompts:
    """The four templates, compiled. Picklable (it pickles its sources and recompiles)."""

    def __init__(self, sources: Mapping[str, tuple[str, str]]) -> None:
        import jinja2

        self._sources = dict(sources)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                 keep_trailing_newline=True, autoescape=False)
        self._templates = {}
        for role, (source, origin) in self._sources.items():
            try:
                self._templates[role] = env.from_string(source)
            except jinja2.TemplateSyntaxError as e:
                raise PromptError(f"{TEMPLATES[role][1]}: {origin} line {e.lineno}: {e.message}") from None

    def __reduce__(self) -> tuple[Any, ...]:
        return (Prompts, (self._sources,))

    @classmethod
    def load(cls, agent_template: str | Path | None = None, emulator_template: str | Path | None = None,
             safety_template: str | Path | None = None, helpfulness_template: str | Path | None = None) -> Prompts:
        """The project's templates, with any given path swapped in for its role."""
        paths = {"agent": agent_template, "emulator": emulator_template, "safety": safety_template,
                 "helpfulness": helpfulness_template}
        return cls({role: _read(role, path) for role, path in paths.items()})

    @classmethod
    def from_config(cls, eval_cfg: Any) -> Prompts:
        """The templates an ``eval`` config names (its ``agent``, ``emulator`` and ``judge`` groups)."""
        return cls.load(eval_cfg.agent.template, eval_cfg.emulator.template, eval_cfg.judge.safety_template,
                        eval_cfg.judge.helpfulness_template)

    def render(self, role: str, context: Mapping[str, Any]) -> list[Message]:
        """Chat messages from a role's template: its ``system`` block, then its ``user`` block."""
        import jinja2

        template = self._templates[role]
        try:
            if "user" not in template.blocks:
                return [{"role": "user", "content": template.render(context).strip()}]
            messages = []
            for name in ("system", "user"):
                if name in template.blocks:
                    text = "".join(template.blocks[name](template.new_context(dict(context)))).strip()
                    if text or name == "user":
                        messages.append({"role": name, "content": text})
            return messages
        except jinja2.TemplateError as e:
            origin = self._sources[role][1]
            message = " ".join(str(e).split())
            raise PromptError(f"{TEMPLATES[role][1]}: {origin}: {type(e).__name__}: {message}") from None

    def agent(self, case: Mapping[str, Any], toolkits: Sequence[Mapping[str, Any]], scratchpad: str,
              settings: Any) -> list[Message]:
        """The agent's prompt for its next turn; ``settings`` has user_name, user_email, current_time."""
        context = case_context(case) | {
            "toolkits": [toolkit_view(k) for k in toolkits], "tool_names": tool_names(toolkits),
            "user": {"name": settings.user_name, "email": settings.user_email},
            "current_time": settings.current_time, "scratchpad": scratchpad,
        }
        return self.render("agent", context)

    def emulator(self, case: Mapping[str, Any], toolkit: Mapping[str, Any], tool: Mapping[str, Any],
                 call: ToolCall, steps: Sequence[Step]) -> list[Message]:
        """The emulator's prompt for one call, with the earlier calls of the episode."""
        kit = toolkit_view(toolkit)
        context = case_context(case) | {"toolkit": kit, "tool": tool_view(toolkit, tool), "call": call,
                                        "steps": list(steps)}
        return self.render("emulator", context)

    def judge(self, metric: str, case: Mapping[str, Any], toolkits: Sequence[Mapping[str, Any]],
              episode: Episode, view: str = "project") -> list[Message]:
        """A judge's prompt for one trajectory; metric ``safety`` or ``helpfulness``. Besides the variables of
        every judge template, ``view`` (``eval.judge.view``), ``scratchpad`` (the trajectory as that view writes
        it) and ``fields`` (the case's fields as the study's records hold them): see ``scratchpad.py``."""
        if metric not in LABELS:
            raise ValueError(f"unknown judge metric {metric!r}: expected one of {', '.join(LABELS)}")
        answer = episode.answer if episode.answer is not None else TOKEN_LIMIT_ANSWER
        context = case_context(case) | {
            "toolkits": [toolkit_view(k) for k in toolkits], "steps": list(episode.steps),
            "final_answer": answer, "labels": dict(LABELS[metric]), "view": view,
            "scratchpad": judge_scratchpad(episode.steps, answer, episode.final, view),
            "fields": study_case_fields(case),
        }
        return self.render(metric, context)
