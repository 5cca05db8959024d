"""Who answers the agent's tool calls: the synthetic world's rules, or an adversarial LLM.

:class:`RuleEmulator` serves the built-in synthetic benchmark. It rebuilds each case's hidden world with the
generator's own ``build_scenario`` and answers through the generator's observation functions, so a live agent
gets exactly what the generated trajectories recorded for the same call, and the rule judges read the answers
the same way. :class:`LLMEmulator` plays ToolEmu's adversarial emulator for any benchmark: one prompt per call,
all of a round's calls sent together, greedy decoding.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent_safety.data.synthetic import generator as gen
from agent_safety.data.synthetic.judges import (
    DESTRUCTIVE_COMMANDS,
    GROUND_TRUTH_KEY,
    READ_VERBS,
    TERMINAL_TOOL,
    Call,
    targets_hit,
)
from agent_safety.evaluate.generative.episode import Episode, Observation, ToolCall

if TYPE_CHECKING:
    from agent_safety.evaluate.generative.client import Endpoint
    from agent_safety.evaluate.generative.prompts import Prompts

#: Shell programs the synthetic machine knows besides the destructive ones; any other is "command not found".
READ_COMMANDS = frozenset({
    "ls", "ps", "cat", "head", "tail", "less", "more", "du", "df", "find", "grep", "egrep", "awk", "sed", "sort",
    "uniq", "wc", "echo", "pwd", "whoami", "top", "htop", "free", "stat", "file", "cut", "tr", "xargs", "which",
    "uptime", "id", "date", "cd", "true", "false", "pgrep", "lsof", "tree", "printf", "test", "env", "uname",
    "hostname", "mkdir", "touch", "cp", "tar", "gzip", "zip", "tee", "nproc", "vmstat", "sleep", "history",
})
KNOWN_COMMANDS = READ_COMMANDS | DESTRUCTIVE_COMMANDS
#: Parameter names that identify an item (an id, a list of ids, a path, an account number).
_ID_SUFFIXES = ("_id", "_ids", "path", "_number")
#: What separates the simple commands of a shell line (as the judges split it).
_SEPARATORS = re.compile(r"&&|\|\||[;|]")


class Emulator(Protocol):
    def observe(self, episodes: list[Episode], calls: list[ToolCall]) -> list[Observation]:
        """One observation per (episode, call) pair, all answered together."""
        ...


# --- the synthetic world ---------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _error(exception: str, message: str) -> str:
    return _dumps({"error": f"{exception}: {message}"})


def _empty(kind: str) -> Any:
    return {"array": [], "object": {}, "string": "", "integer": 0, "number": 0, "boolean": False}.get(kind)


def _shell_parts(command: str) -> list[list[str]]:
    """The words of each simple command of a (possibly chained or piped) shell line, a leading ``sudo``
    dropped."""
    parts = []
    for part in _SEPARATORS.split(command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        if words and words[0] == "sudo":
            words = words[1:]
        if words:
            parts.append(words)
    return parts


def _program(words: Sequence[str]) -> str:
    return words[0].rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SyntheticWorld:
    """One synthetic case's hidden state and the tools it can answer."""

    scenario: gen.Scenario
    tools: Mapping[str, tuple[str, Mapping[str, Any]]]
    """Full tool name -> (toolkit name, tool spec), for the case's toolkits."""

    @classmethod
    def build(cls, case_idx: int, case: Mapping[str, Any], seed: int) -> SyntheticWorld:
        """The generator's scenario for ``case_idx``, checked against the case's ground truth."""
        name = case.get("name", f"#{case_idx}")
        truth = case.get(GROUND_TRUTH_KEY)
        if truth is None:
            raise ValueError(f"case {name!r} has no {GROUND_TRUTH_KEY!r}: eval.emulator.kind=rule answers only the "
                             "synthetic benchmark's cases")
        scenario = gen.build_scenario(case_idx, seed)
        expected = gen.case_record(case_idx, scenario)
        if expected[GROUND_TRUTH_KEY] != truth or expected["Toolkits"] != list(case.get("Toolkits", [])):
            raise ValueError(f"case {name!r} (case_idx {case_idx}) is not what the synthetic generator builds with "
                             f"data.generator_seed={seed}: was the benchmark generated with another seed?")
        tools = {f"{kit}{tool['name']}": (kit, tool) for kit in expected["Toolkits"] for tool in gen.TOOLKITS[kit][1]}
        return cls(scenario, tools)

    @property
    def targets(self) -> dict[str, Mapping[str, Any]]:
        return {str(it["id"]): it for it in self.scenario.items}

    def answer(self, call: ToolCall) -> str:
        """The observation the synthetic tools give this call (one JSON object as text)."""
        if call.tool not in self.tools:
            return gen.invalid_tool_observation(call.tool)
        args = call.args
        if args is None:
            try:
                args = json.loads(call.tool_input)
            except (json.JSONDecodeError, TypeError):
                args = None
        if not isinstance(args, dict):
            return _error("InvalidRequestException", "The Action Input must be one JSON object.")
        kit, spec = self.tools[call.tool]
        t = self.scenario.template
        if call.tool == TERMINAL_TOOL:
            return self._terminal(args)
        if call.tool == gen.tool_name(t, t.lookup[0]):
            return self._lookup(spec, args)
        if call.tool == gen.tool_name(t, t.action[0]):
            return self._action(spec, args)
        return self._other(kit, spec, args)

    # -- toolkit tools

    def _lookup(self, spec: Mapping[str, Any], args: Mapping[str, Any]) -> str:
        """Any well-formed call of the case's lookup tool lists the case's items (lenient on keywords and other
        filters), except a listing of a folder that holds none of them."""
        if (bad := _bad_arguments(spec, args)) is not None:
            return bad
        for key, values in _ids(spec, args).items():
            far = [str(v) for v in values if key.endswith("path") and not self._near(str(v))]
            if far:
                return _error("NotFoundException", f"The {key} '{far[0]}' does not exist.")
        return gen.lookup_observation(self.scenario)

    def _action(self, spec: Mapping[str, Any], args: Mapping[str, Any]) -> str:
        """The template's action: on known items it succeeds exactly as the generator writes it."""
        t = self.scenario.template
        key = gen.id_param(t)
        if args.get(key) is None:
            return gen.missing_parameter_observation(key)
        if (bad := _bad_arguments(spec, args)) is not None:
            return bad
        ids = args[key] if isinstance(args[key], list) else [args[key]]
        if not ids or any(str(i).strip() == "" for i in ids):
            return gen.invalid_value_observation(key)
        if (missing := self._not_found(spec, key, ids)) is not None:
            return missing
        return gen.success_observation(t)

    def _other(self, kit: str, spec: Mapping[str, Any], args: Mapping[str, Any]) -> str:
        """Other tools of the toolkit: reads of known items return them, other reads an empty result; writes
        succeed unless they name an item the world does not have (where the tool can say NotFound)."""
        if (bad := _bad_arguments(spec, args)) is not None:
            return bad
        ids = _ids(spec, args)
        for key, values in ids.items():
            if (missing := self._not_found(spec, key, values)) is not None:
                return missing
        returns = spec["returns"]
        if spec["name"].startswith(READ_VERBS):  # the judges' notion of a tool that only reads
            known = [self.targets[str(v)] for values in ids.values() for v in values if str(v) in self.targets]
            return _dumps({r["name"]: self._items(known, r["type"]) if i == 0 and known else _empty(r["type"])
                           for i, r in enumerate(returns)})
        return _dumps({r["name"]: _written(kit, r, args) for r in returns})

    def _items(self, items: list[Mapping[str, Any]], kind: str) -> Any:
        t = self.scenario.template
        records = [{t.id_key: it["id"], t.name_key: it["name"], **it["fields"]} for it in items]
        return records if kind == "array" else records[0]

    def _not_found(self, spec: Mapping[str, Any], key: str, ids: Sequence[Any]) -> str | None:
        """A NotFoundException for ids the world does not have, if the tool declares that exception (a tool
        that does not, such as sending an email or a transfer, goes through to whatever it was given)."""
        unknown = [str(i) for i in ids if str(i) not in self.targets]
        if not unknown or not any(e["name"] == "NotFoundException" for e in spec.get("exceptions", [])):
            return None
        shown = ", ".join(f"'{i}'" for i in unknown)
        return _error("NotFoundException", f"The {key} {shown} does not exist.")

    # -- the shell

    def _terminal(self, args: Mapping[str, Any]) -> str:
        """Unknown programs: exit 127 as bash says; destructive commands on the case's items succeed, on
        nothing it has exit 1; the lookup's program lists the items; other reads print nothing."""
        command = args.get("command")
        if command is None:
            return gen.missing_parameter_observation("command")
        if not isinstance(command, str) or not command.strip():
            return gen.invalid_value_observation("command")
        parts = _shell_parts(command)
        if not parts:
            return gen.invalid_value_observation("command")
        for words in parts:
            if _program(words) not in KNOWN_COMMANDS:
                return gen.command_not_found_observation(words[0])
        destructive = [w for w in parts if _program(w) in DESTRUCTIVE_COMMANDS]
        if destructive:
            return self._destroy(destructive)
        lookup_words = _shell_parts(gen.lookup_call(self.scenario)[1]["command"])[0]
        first = parts[0]
        if _program(first) == _program(lookup_words):
            paths = [w for w in first[1:] if w.startswith(("/", "~"))]
            if not paths or any(self._near(p) for p in paths):
                return gen.lookup_observation(self.scenario)
            return _dumps({"exit_code": 2, "output": f"{first[0]}: cannot access '{paths[0]}': No such file or "
                                                     "directory"})
        return _dumps({"exit_code": 0, "output": ""})

    def _destroy(self, commands: list[list[str]]) -> str:
        words = tuple(w for c in commands for w in c)
        if targets_hit(Call(TERMINAL_TOOL, {}, "", False, True, words), self.targets):
            return gen.success_observation(self.scenario.template)
        for c in commands:
            operands = [w for w in c[1:] if not w.startswith("-") and ("/" in w or w.isdigit())]
            if operands:
                what = (f"bash: kill: ({operands[0]}) - No such process" if _program(c).endswith("kill")
                        else f"{_program(c)}: cannot access '{operands[0]}': No such file or directory")
                return _dumps({"exit_code": 1, "output": what})
        return _dumps({"exit_code": 0, "output": ""})

    def _near(self, path: str) -> bool:
        """Whether a listed path is one of the items or a folder holding them (the root holds everything)."""
        base = path.rstrip("*").rstrip("/")
        return any(t == base or t.startswith(base + "/") for t in self.targets)


def _ids(spec: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The given values of the parameters that name items (ids, id lists, paths), each as a list."""
    out = {}
    for p in spec["parameters"]:
        value = args.get(p["name"])
        if p["name"].endswith(_ID_SUFFIXES) and value not in (None, "", []):
            out[p["name"]] = value if isinstance(value, list) else [value]
    return out


def _bad_arguments(spec: Mapping[str, Any], args: Mapping[str, Any]) -> str | None:
    """A missing required parameter, or an empty value, as the synthetic tools report them."""
    for p in spec["parameters"]:
        if p.get("required") and args.get(p["name"]) is None:
            return gen.missing_parameter_observation(p["name"])
    for p in spec["parameters"]:
        if args.get(p["name"]) in ("", []):
            return gen.invalid_value_observation(p["name"])
    return None


def _written(kit: str, ret: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
    """A successful write's return value: echo an argument of that name, else a stable made-up one."""
    name, kind = ret["name"], ret["type"]
    if name in args:
        return args[name]
    if kind == "boolean":
        return True
    if kind == "string":
        digest = hashlib.sha256(_dumps(args).encode()).hexdigest()[:8]
        return f"https://{kit.lower()}.example/{digest}" if "link" in name or "url" in name else f"{name}_{digest}"
    return _empty(kind)


class RuleEmulator:
    """The synthetic benchmark's deterministic tools (``eval.emulator.kind=rule``).

    Each case's world is rebuilt from ``data.generator_seed`` and checked against the case's ground truth, so
    a benchmark generated with another seed fails loudly instead of answering about different items.
    """

    endpoint = None

    def __init__(self, generator_seed: int) -> None:
        self.generator_seed = int(generator_seed)
        self._worlds: dict[tuple[int, str], SyntheticWorld] = {}

    def world(self, episode: Episode) -> SyntheticWorld:
        """The case's world, built (and checked) once per case."""
        key = (episode.case_idx, str(episode.case.get("name")))
        if key not in self._worlds:
            self._worlds[key] = SyntheticWorld.build(episode.case_idx, episode.case, self.generator_seed)
        return self._worlds[key]

    def observe(self, episodes: list[Episode], calls: list[ToolCall]) -> list[Observation]:
        _same_length(episodes, calls)
        return [Observation(self.world(e).answer(c)) for e, c in zip(episodes, calls, strict=True)]


# --- the LLM emulator ------------------------------------------------------------------------------------


class LLMEmulator:
    """ToolEmu's adversarial emulator on an OpenAI-compatible endpoint (``eval.emulator.kind=llm``).

    Greedy decoding. A reply with no parseable observation is asked again ``cfg.retries`` times (each retry its
    own cache entry, by replicate index), then becomes ``{}`` with ``parse_failed`` set. Token counts add up
    over the attempts.
    """

    def __init__(self, cfg: Any, endpoint: Endpoint, prompts: Prompts, toolkits: Mapping[str, Mapping[str, Any]]):
        self.cfg = cfg
        self.endpoint = endpoint
        self.prompts = prompts
        self.toolkits = dict(toolkits)

    def observe(self, episodes: list[Episode], calls: list[ToolCall]) -> list[Observation]:
        from agent_safety.evaluate.generative.client import ChatRequest
        from agent_safety.evaluate.generative.parsing import parse_emulator_reply

        _same_length(episodes, calls)
        results: list[Observation | None] = [None] * len(calls)
        messages: dict[int, list[dict[str, str]]] = {}
        for i, (episode, call) in enumerate(zip(episodes, calls, strict=True)):
            found = self._find(episode, call.tool)
            if found is None:  # the rollout catches unknown tools first; never ask the LLM about one
                results[i] = Observation(gen.invalid_tool_observation(call.tool))
            else:
                messages[i] = self.prompts.emulator(episode.case, found[0], found[1], call, episode.steps)
        tokens = {i: [0, 0] for i in messages}
        pending = list(messages)
        max_tokens = int(self.cfg.endpoint.max_tokens)
        for attempt in range(int(self.cfg.retries) + 1):
            if not pending:
                break
            requests = [ChatRequest(messages[i], temperature=0.0, max_tokens=max_tokens, replicate=attempt)
                        for i in pending]
            replies = self.endpoint.complete(requests, desc=f"emulator (try {attempt + 1})" if attempt else "emulator")
            retry = []
            for i, reply in zip(pending, replies, strict=True):
                tokens[i][0] += reply.prompt_tokens
                tokens[i][1] += reply.completion_tokens
                obs = parse_emulator_reply(reply.text)
                results[i] = obs
                if obs.parse_failed:
                    retry.append(i)
            pending = retry
        for i, (prompt_tokens, completion_tokens) in tokens.items():
            obs = results[i]
            assert obs is not None
            obs.prompt_tokens, obs.completion_tokens = prompt_tokens, completion_tokens
        return [r for r in results if r is not None]

    def _find(self, episode: Episode, tool: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
        from agent_safety.evaluate.generative.prompts import find_tool

        return find_tool(case_toolkits(episode.case, self.toolkits), tool)


def case_toolkits(case: Mapping[str, Any], toolkits: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The specs of the toolkits a case names; one line naming the case and toolkit when one is missing."""
    try:
        return [toolkits[name] for name in case.get("Toolkits", [])]
    except KeyError as e:
        raise ValueError(f"case {case.get('name')!r} names toolkit {e.args[0]!r}, which the benchmark's "
                         "assets/all_toolkits.json does not define") from None


def _same_length(episodes: Sequence[Episode], calls: Sequence[ToolCall]) -> None:
    if len(episodes) != len(calls):
        raise ValueError(f"observe() needs one call per episode, got {len(episodes)} episodes and {len(calls)} calls")


# --- construction ----------------------------------------------------------------------------------------


def require_endpoint(endpoint: Any, key: str) -> None:
    """An LLM role needs a server and a model name: one line naming the missing key."""
    for field in ("base_url", "model"):
        if not getattr(endpoint, field, None):
            from agent_safety.config.validate import ConfigError

            raise ConfigError(f"{key}.{field} is not set: an LLM {key.split('.')[1]} needs an OpenAI-compatible "
                              f"server (e.g. {key}.base_url=http://localhost:8000/v1 {key}.model=NAME)")


def make_emulator(eval_cfg: Any, data_cfg: Any, toolkits: Mapping[str, Mapping[str, Any]], prompts: Prompts,
                  cache_dir: Path) -> Emulator:
    """The emulator ``eval.emulator.kind`` names: ``rule`` (synthetic benchmark only) or ``llm``."""
    from agent_safety.config.validate import ConfigError

    cfg = eval_cfg.emulator
    if cfg.kind == "rule":
        if data_cfg.source != "synthetic":
            raise ConfigError("eval.emulator.kind=rule needs the synthetic benchmark (data.source=synthetic); "
                              "use eval.emulator.kind=llm with an endpoint")
        return RuleEmulator(data_cfg.generator_seed)
    if cfg.kind == "llm":
        from agent_safety.evaluate.generative.client import Endpoint

        require_endpoint(cfg.endpoint, "eval.emulator.endpoint")
        return LLMEmulator(cfg, Endpoint(cfg.endpoint, Path(cache_dir), role="emulator"), prompts, toolkits)
    raise ConfigError(f"eval.emulator.kind={cfg.kind!r}: expected 'rule' or 'llm'")
