"""Who answers the agent's tool calls: the synthetic world's rules, or an adversarial LLM.

:class:`RuleEmulator` serves the built-in synthetic benchmark. It rebuilds each case's world
(``data/synthetic/world.py``) and answers every call after the episode's earlier ones, as the generator does, so
a live agent gets exactly what the generated trajectories recorded for the same calls, and the rule judges read
the answers the same way. :class:`LLMEmulator` plays ToolEmu's adversarial emulator for any benchmark: one prompt
per call, all of a round's calls sent together, greedy decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent_safety.agent.episode import Episode, Observation, ToolCall
from agent_safety.agent.parsing import parse_emulator_reply
from agent_safety.agent.prompts import find_tool
from agent_safety.data.synthetic.world import (
    GROUND_TRUTH_KEY,
    World,
    build_scenario,
    case_record,
    invalid_tool_observation,
)
from agent_safety.evaluate.generative.client import ChatRequest, Endpoint

if TYPE_CHECKING:
    from agent_safety.agent.prompts import Prompts
    from agent_safety.evaluate.generative.client import Endpoint

class Emulator(Protocol):
    def observe(self, episodes: list[Episode], calls: list[ToolCall]) -> list[Observation]:
        """One observation per (episode, call) pair, all answered together."""
        ...


# --- the synthetic world ---------------------------------------------------------------------------------


def synthetic_world(case_idx: int, case: Mapping[str, Any], seed: int) -> World:
    """The generator's world for ``case_idx``, checked against the case's ground truth."""
    name = case.get("name", f"#{case_idx}")
    truth = case.get(GROUND_TRUTH_KEY)
    if truth is None:
        raise ValueError(f"case {name!r} has no {GROUND_TRUTH_KEY!r}: eval.emulator.kind=rule answers only the "
                         "synthetic benchmark's cases")
    scenario = build_scenario(case_idx, seed)
    expected = case_record(case_idx, scenario)
    if expected[GROUND_TRUTH_KEY] != truth or expected["Toolkits"] != list(case.get("Toolkits", [])):
        raise ValueError(f"case {name!r} (case_idx {case_idx}) is not what the synthetic generator builds with "
                         f"data.generator_seed={seed}: was the benchmark generated with another seed?")
    return World(scenario)


def _history(episode: Episode) -> list[tuple[str, str]]:
    """The episode's earlier calls (those the agent's own output broke change nothing when replayed)."""
    return [(s.tool, s.tool_input) for s in episode.steps]


class RuleEmulator:
    """The synthetic benchmark's deterministic tools (``eval.emulator.kind=rule``).

    Each case's world is rebuilt from ``data.generator_seed`` and checked against the case's ground truth, so
    a benchmark generated with another seed fails loudly instead of answering about different items.
    """

    endpoint = None

    def __init__(self, generator_seed: int) -> None:
        self.generator_seed = int(generator_seed)
        self._worlds: dict[tuple[int, str], World] = {}

    def world(self, episode: Episode) -> World:
        """The case's world, built (and checked) once per case; it holds no state (see ``World.answer``)."""
        key = (episode.case_idx, str(episode.case.get("name")))
        if key not in self._worlds:
            self._worlds[key] = synthetic_world(episode.case_idx, episode.case, self.generator_seed)
        return self._worlds[key]

    def observe(self, episodes: list[Episode], calls: list[ToolCall]) -> list[Observation]:
        _same_length(episodes, calls)
        return [Observation(self.world(e).answer(c.tool, c.args if c.args is not None else c.tool_input,
                                                 _history(e)))
                for e, c in zip(episodes, calls, strict=True)]


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
        _same_length(episodes, calls)
        results: list[Observation | None] = [None] * len(calls)
        messages: dict[int, list[dict[str, str]]] = {}
        for i, (episode, call) in enumerate(zip(episodes, calls, strict=True)):
            found = self._find(episode, call.tool)
            if found is None:  # the rollout catches unknown tools first; never ask the LLM about one
                results[i] = Observation(invalid_tool_observation(call.tool))
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
        require_endpoint(cfg.endpoint, "eval.emulator.endpoint")
        return LLMEmulator(cfg, Endpoint(cfg.endpoint, Path(cache_dir), role="emulator"), prompts, toolkits)
    raise ConfigError(f"eval.emulator.kind={cfg.kind!r}: expected 'rule' or 'llm'")
