"""``agent-safety evaluate --judge-only``: score published trajectories with the configured judge, no agent and no
emulator, and report how far it agrees with the judges that labelled them.

This is how a user checks a cheaper judge before spending a sweep on it: the study's 3,888 trajectories
carry labels from both of its judges (gpt-5-mini, Qwen3-32B), so a new judge's labels on a subset of them
give its exact agreement, agreement within one point and quadratic kappa against each (as ``agent-safety
judges`` compares the two). The judge is the generative evaluation's (``eval/judge=llm
eval.judge.endpoint.base_url=... eval.judge.endpoint.model=...``, or ``eval/judge=rule`` on
``data=synthetic``), and its replies go through the same response cache, so a rerun sends no request.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_safety.agent.episode import FINAL_ANSWER, TOKEN_LIMIT, Episode, Step
from agent_safety.agent.prompts import Prompts
from agent_safety.aggregate.agreement import (
    METRICS,
    compare,
    format_comparison,
    labels_of,
    trajectory_key,
    write_report,
)
from agent_safety.aggregate.judges_cli import judge_folders
from agent_safety.config.compose import compose_config, with_default
from agent_safety.data.split import split_cases
from agent_safety.data.toolemu import load_benchmark
from agent_safety.evaluate.generative.judge import make_judge
from agent_safety.store.io import atomic_write

if TYPE_CHECKING:
    from agent_safety.agent.episode import Episode, Verdict
    from agent_safety.aggregate.agreement import Comparison
    from agent_safety.data.toolemu import Benchmark, Trajectory

DEFAULTS = (("data", "data=toolemu_gpt5m"), ("eval", "eval=generative"))
SPLITS = ("test", "train", "all")
FINAL_MARKER = "Final Answer:"


def episode_of(t: Trajectory, case: dict[str, Any]) -> Episode:
    """A loaded trajectory as the episode the judges read: its steps, final log and final answer."""
    steps = [Step(log=s.thought, tool=s.tool, tool_input=s.tool_input, observation=s.observation) for s in t.steps]
    head, marker, answer = t.final.rpartition(FINAL_MARKER)
    return Episode(case_idx=t.case_idx, case=case, steps=steps, final=t.final,
                   answer=answer.strip() if marker else (t.final.strip() or None),
                   end=FINAL_ANSWER if marker else TOKEN_LIMIT)


def select(bench: Benchmark, split: str, seed: int, limit: int | None) -> list[Trajectory]:
    """The trajectories of ``split``'s cases (seed ``seed``'s split, as a run's), at most ``limit`` of them drawn
    at random with that seed and kept in file order, so a rerun scores (and hits the cache for) the same ones."""
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"--max-trajectories {limit}: must be at least 1")
    train, test = split_cases(bench.n_cases, seed)
    cases = {"train": set(train), "test": set(test), "all": None}[split]
    chosen = [t for t in bench.trajectories if cases is None or t.case_idx in cases]
    if limit is not None and limit < len(chosen):
        keep = set(random.Random(seed).sample(range(len(chosen)), limit))
        chosen = [t for i, t in enumerate(chosen) if i in keep]
    return chosen


def references(root: Path, bench: Benchmark, on_error: str) -> dict[str, Benchmark]:
    """Every judge whose labels the data root holds (the study's: gpt5m and q32), the loaded one reused."""
    return {j: bench if j == bench.judge else load_benchmark(root, j, on_error=on_error) for j in judge_folders(root)}


def with_defaults(overrides: Sequence[str]) -> list[str]:
    """The study's data and the generative evaluation's judge settings unless the overrides choose others."""
    out = list(overrides)
    for key, default in reversed(DEFAULTS):
        out = with_default(out, key, default)
    return out


def judge_only(overrides: Sequence[str], split: str = "test", max_trajectories: int | None = None,
               out: Path | None = None, figures: bool = True) -> tuple[dict[str, Any], list[Comparison]]:
    """Score the selected trajectories with the configured judge and compare it with each reference judge:
    (report header, one comparison per reference judge that labelled these trajectories)."""
    from agent_safety.data.benchmark import load_configured

    cfg = compose_config(with_defaults(overrides))
    bench, root = load_configured(cfg)
    chosen = select(bench, split, int(cfg.seed), max_trajectories)
    if not chosen:
        raise ValueError(f"data {cfg.data.name}: no trajectory on the {split} split of seed {cfg.seed}")
    judge = make_judge(cfg.eval, bench.toolkits, Prompts.from_config(cfg.eval), Path(cfg.paths.cache_dir),
                       data_cfg=cfg.data)
    episodes = [episode_of(t, bench.cases[t.case_idx]) for t in chosen]
    verdicts = {m: judge.judge(episodes, m) for m in METRICS}
    refs = references(root, bench, str(cfg.data.on_error))
    name = str(judge.label) + ("-rerun" if str(judge.label) in refs else "")
    keys = [trajectory_key(t) for t in chosen]
    ours = {k: {m: verdicts[m][i].score for m in METRICS} for i, k in enumerate(keys)}
    theirs = {ref: _restrict(labels_of(b.trajectories, f"{root} ({ref})"), ours) for ref, b in refs.items()}
    comparisons = [compare(name, ours, ref, labels) for ref, labels in theirs.items() if labels]
    report = {"judge": _judge_info(cfg, judge, name, verdicts), "data": str(cfg.data.name), "root": str(root),
              "split": split, "seed": int(cfg.seed), "trajectories": len(chosen),
              "references_without_these_trajectories": [ref for ref, labels in theirs.items() if not labels]}
    if out is not None:
        write_report(out, report, comparisons, figures=figures)
        _write_labels(out / "labels.jsonl", chosen, verdicts)
    return report, comparisons


def _restrict(labels: dict[Any, Any], keys: dict[Any, Any]) -> dict[Any, Any]:
    """A reference judge's labels of the scored trajectories only: its other trajectories are not unmatched,
    just not asked about."""
    return {k: v for k, v in labels.items() if k in keys}


def _judge_info(cfg: Any, judge: Any, name: str, verdicts: dict[str, list[Verdict]]) -> dict[str, Any]:
    """What was asked and what it cost: the numbers to read before trusting the agreement."""
    endpoint = getattr(judge, "endpoint", None)
    return {
        "name": name, "label": str(judge.label), "kind": str(cfg.eval.judge.kind),
        "model": None if endpoint is None else str(cfg.eval.judge.endpoint.model),
        "replicates": int(cfg.eval.judge.replicates) if endpoint is not None else 1,
        "scored": {m: sum(v.score is not None for v in vs) for m, vs in verdicts.items()},
        "unscored": {m: sum(v.score is None for v in vs) for m, vs in verdicts.items()},
        "parse_failures": {m: sum(v.parse_failures for v in vs) for m, vs in verdicts.items()},
        "usage": {} if endpoint is None else endpoint.usage.as_dict(),
    }


def _write_labels(path: Path, chosen: Sequence[Trajectory], verdicts: dict[str, list[Verdict]]) -> None:
    """The new judge's verdict on each scored trajectory, beside where the trajectory came from."""
    lines = []
    for i, t in enumerate(chosen):
        row: dict[str, Any] = {"source": t.source, "agent": t.agent, "case_idx": t.case_idx}
        for metric, vs in verdicts.items():
            v = vs[i]
            row[metric] = {"score": v.score, "label": v.label, "replicates": v.replicates,
                           "parse_failures": v.parse_failures, "published": t.scores.get(metric)}
        lines.append(json.dumps(row) + "\n")
    atomic_write(path, "".join(lines), durable=False)


def format_report(report: dict[str, Any], comparisons: Sequence[Comparison]) -> str:
    """The printed report: what was scored, what the judge cost, then each comparison."""
    j = report["judge"]
    model = f" ({j['model']})" if j["model"] else ""
    lines = [f"judge    {j['name']}: {j['kind']}{model}",
             f"data     {report['data']}, {report['split']} split of seed {report['seed']}: "
             f"{report['trajectories']:,} trajectories ({report['root']})"]
    for metric in j["scored"]:
        lines.append(f"{metric:<12} scored {j['scored'][metric]:,}, unscored {j['unscored'][metric]:,} "
                     f"(parse failures {j['parse_failures'][metric]:,} replicate(s))")
    if j["usage"]:
        u = j["usage"]
        lines.append(f"requests     sent {u.get('requests_sent', 0):,}, cached {u.get('cached', 0):,}; tokens "
                     f"{u.get('prompt_tokens', 0):,} prompt, {u.get('completion_tokens', 0):,} completion")
    for ref in report["references_without_these_trajectories"]:
        lines.append(f"(judge {ref}'s labels under the data root are of other trajectories: not compared)")
    for c in comparisons:
        lines += ["", format_comparison(c)]
    return "\n".join(lines)
