"""What the judges see: our judge prompts for the study's episodes against what the study's judges read.

Reads every published trajectory of ``../shared/toolemu/upstream-*.tar.xz`` (streamed, nothing extracted),
replays each through our episode loop (``replay.replay``, the study's settings), renders both judges' prompts
for our episode and checks, byte for byte, that each holds what the study's judge read of that episode
(``replay.judge_input_agreement``): the case's fields as the record holds them, the steps and the end of the
study's scratchpad (``replay.study_judge_scratchpad``), in the study's order, and, in the helpfulness prompt,
none of the safety judge's fields. Prints a Markdown table: ``eval.judge.view=study`` on every episode,
``project`` on every ``--project-every``-th; then the steps whose observation is not the recorded one.

    python bench/bench_judge_input.py [--archive PATH ...] [--project-every N]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "toolemu"
ARCHIVES = (SHARED / "upstream-data.tar.xz", SHARED / "upstream-results-match.tar.xz")
ROWS = ("input", "underspecifications", "risky_outcome", "risky_actions", "steps", "end", "order",
        "no safety fields", "all")
#: The rows each judge's prompt is checked on (the study's helpfulness judge read no safety fields).
APPLIES = {"safety": frozenset(ROWS) - {"no safety fields"},
           "helpfulness": frozenset({"input", "steps", "end", "order", "no safety fields", "all"})}


def measure(published: list, ours: list, toolkits: dict, view: str, every: int = 1) -> collections.Counter:
    """``(metric, part) -> episodes that agree`` and ``n`` (episodes checked), over every ``every``-th episode."""
    from agent_safety.agent.prompts import Prompts
    from agent_safety.evaluate.generative.replay import judge_input_agreement

    prompts, counts = Prompts.load(), collections.Counter()
    for p, o in list(zip(published, ours, strict=True))[::every]:
        parts = judge_input_agreement(p, o, prompts, toolkits, view)
        counts["n"] += 1
        counts.update(tuple(k.split(":")) for k, v in parts.items() if v)
        for metric in ("safety", "helpfulness"):
            counts[metric, "all"] += all(v for k, v in parts.items() if k.startswith(metric))
    return counts


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "-"


def print_table(study: collections.Counter, project: collections.Counter) -> None:
    print("| part of the judge's input | study view: safety | study view: helpfulness "
          "| project view: safety | project view: helpfulness |")
    print("|---|---:|---:|---:|---:|")
    for row in ROWS:
        cells = []
        for counts in (study, project):
            for metric in ("safety", "helpfulness"):
                cells.append(_pct(counts[metric, row], counts["n"]) if row in APPLIES[metric] else "-")
        print(f"| {row} | " + " | ".join(cells) + " |")
    print(f"\nepisodes: {study['n']:,} (study view), {project['n']:,} (project view)")


def observation_differences(published: list, ours: list) -> collections.Counter:
    """Steps whose observation in our episode is not the recorded one, by what the study's observation was."""
    counts: collections.Counter = collections.Counter()
    for p, o in zip(published, ours, strict=True):
        for theirs, mine in zip(p.steps, o.steps, strict=False):
            if theirs.observation != mine.observation:
                text = theirs.observation
                kind = ("an unknown tool's error" if "is not a valid tool" in text
                        else "an invalid input's error" if "Invalid format" in text or "escape" in text
                        else "another error" if text.startswith('{"error"') else "not an error")
                counts[kind] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, action="append", help="a study archive (default: both in ../shared)")
    ap.add_argument("--project-every", type=int, default=10, help="check the project view on every N-th episode")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from agent_safety.evaluate.generative.replay import (
        read_published,
        read_toolkits,
        replay,
        study_settings,
        study_token_counter,
    )

    archives = args.archive or [a for a in ARCHIVES if a.exists()]
    if not archives:
        print(f"no archive: {ARCHIVES[0]} is absent", file=sys.stderr)
        return 2
    started = time.perf_counter()
    published = [e for a in archives for e in read_published(a) if e.ending != "oom"]
    toolkits = read_toolkits(archives[0])
    counter = study_token_counter()
    count, name = counter if counter else ((lambda text: 0), "none: no token cap (tiktoken's cl100k_base absent)")
    ours = replay(published, toolkits, study_settings(8000 if counter else 10**9), count)
    print(f"{len(published):,} episodes read and replayed in {time.perf_counter() - started:.1f} s "
          f"(token cap counted with {name}; the study's crash records left out)\n")
    started = time.perf_counter()
    study = measure(published, ours, toolkits, "study")
    project = measure(published, ours, toolkits, "project", args.project_every)
    print_table(study, project)
    print(f"judge prompts rendered and compared in {time.perf_counter() - started:.1f} s\n")
    differences = observation_differences(published, ours)
    print(f"steps whose observation is not the recorded one: {sum(differences.values()):,}")
    for kind, n in differences.most_common():
        print(f"- {kind}: {n:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
