"""``agent-safety data``: fetch the study's data, check it (``stats``) and dry-run its formatting (``example``).

``stats`` and ``example`` take the same Hydra overrides as ``launch.py`` (``data=toolemu_gpt5m seed=0
data.root=...``), so users check exactly the data, split and pair rules a run would use.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_safety.config.compose import compose_config
from agent_safety.config.validate import ConfigError, validate_objective, validate_on_error
from agent_safety.data.benchmark import load_configured
from agent_safety.data.fetch import fetch
from agent_safety.data.split import split_cases
from agent_safety.data.toolemu import Benchmark
from agent_safety.pairs.formatting import decode_example, tokenize_benchmark
from agent_safety.pairs.rules import PairRule, build_pairs

SPLITS = ("all", "train", "test")
SCORE_BINS = (0.0, 1.0, 2.0, 3.0)


def split_objective(overrides: Sequence[str]) -> tuple[list[str], str | None]:
    """Take ``objective=NAME`` out of the overrides: here it selects what to report, not a config group."""
    rest, only = [], None
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key.strip() == "objective":
            only = value.strip()
        else:
            rest.append(o)
    return rest, only


def objective_rules(cfg: Any, only: str | None) -> dict[str, PairRule]:
    """Pair rules of the config's objectives (or just ``only``), checked as ``validate`` checks them."""
    validate_on_error(cfg.data)
    names = list(cfg.objectives)
    if only is not None:
        if only not in cfg.objectives:
            raise ConfigError(f"objective={only}: unknown objective (known: {', '.join(sorted(names))})")
        names = [only]
    rules = {}
    for name in names:
        validate_objective(name, cfg.objectives[name])
        rules[name] = PairRule.from_config(cfg.objectives[name])
    return rules


def histogram(values: Iterable[float]) -> dict[str, int]:
    """Counts per score; 0-3 always listed, halves (medians of an even number of replicates) where present."""
    counts = Counter(float(v) for v in values)
    return {f"{v:g}": counts.get(v, 0) for v in sorted(set(SCORE_BINS) | set(counts))}


def data_stats(bench: Benchmark, rules: Mapping[str, PairRule], seed: int) -> dict[str, Any]:
    """Everything ``data stats`` reports, as plain data (the JSON output)."""
    train, test = split_cases(bench.n_cases, seed)
    per_case = [len(v) for v in bench.by_case().values()]
    metrics = sorted({m for t in bench.trajectories for m in t.scores}, key=lambda m: (m != "safety", m))
    pairs = {name: {"all": len(build_pairs(bench.trajectories, rule)),
                    "train": len(build_pairs(bench.trajectories, rule, train)),
                    "test": len(build_pairs(bench.trajectories, rule, test))}
             for name, rule in rules.items()}
    return {
        "judge": bench.judge,
        "fingerprint": bench.fingerprint,
        "seed": seed,
        "cases": len(bench.cases),
        "trajectories": len(bench.trajectories),
        "trajectories_per_case": {"min": min(per_case, default=0), "max": max(per_case, default=0)},
        "split": {"train": len(train), "test": len(test)},
        "scores": {m: histogram(t.scores[m] for t in bench.trajectories) for m in metrics},
        "pairs": pairs,
        "skipped": len(bench.skipped),
        "skipped_records": list(bench.skipped),
    }


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            .rstrip() for r in rows]


def format_stats(stats: Mapping[str, Any], max_skipped: int = 10) -> str:
    """The human-readable table of ``data stats``."""
    per = stats["trajectories_per_case"]
    per_text = f"{per['min']}" if per["min"] == per["max"] else f"{per['min']}-{per['max']}"
    lines = [
        f"data          {stats['data']} (judge {stats['judge']}, fingerprint {stats['fingerprint']})",
        f"root          {stats['root']}",
        f"cases         {stats['cases']:,} (seed {stats['seed']}: {stats['split']['train']} train, "
        f"{stats['split']['test']} test)",
        f"trajectories  {stats['trajectories']:,} ({per_text} per case)",
        f"skipped       {stats['skipped']:,} records (data.on_error={stats['on_error']})",
    ]
    lines += [f"  {s}" for s in stats["skipped_records"][:max_skipped]]
    if stats["skipped"] > max_skipped:
        lines.append(f"  ... and {stats['skipped'] - max_skipped:,} more (all of them with --json)")
    bins = sorted({b for h in stats["scores"].values() for b in h}, key=float)
    lines += ["", *_table([["score", *bins]] + [[m, *(f"{h.get(b, 0):,}" for b in bins)]
                                                 for m, h in stats["scores"].items()])]
    lines += ["", *_table([["pairs", *SPLITS]] + [[name, *(f"{p[s]:,}" for s in SPLITS)]
                                                  for name, p in stats["pairs"].items()])]
    return "\n".join(lines)


def cmd_fetch(args: argparse.Namespace) -> int:
    root = fetch(cache_dir=args.cache_dir, archive=args.archive, url=args.url, progress=not args.quiet)
    print(root)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    rest, only = split_objective(args.overrides)
    cfg = compose_config(rest)
    rules = objective_rules(cfg, only)  # checked before any data is read
    bench, root = load_configured(cfg)
    stats = {"data": cfg.data.name, "root": str(root), "on_error": cfg.data.on_error,
             **data_stats(bench, rules, int(cfg.seed))}
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    """Dry run: one pair of the seed's training split, decoded from exactly the tokens the trainer sees."""
    from agent_safety.train.models import load_tokenizer, resolve_base

    rest, only = split_objective(args.overrides)
    cfg = compose_config(rest)
    name = only or cfg.schedule.stages[0]
    rule = objective_rules(cfg, name)[name]
    bench, _ = load_configured(cfg)
    train, test = split_cases(bench.n_cases, int(cfg.seed))
    cases = {"train": train, "test": test, "all": None}[args.split]
    pairs = build_pairs(bench.trajectories, rule, cases)
    if not 0 <= args.pair < len(pairs):
        raise ValueError(f"--pair {args.pair}: objective {name} has {len(pairs)} pairs on the {args.split} split")
    chosen, rejected = pairs[args.pair]
    case = bench.trajectories[chosen].case_idx
    base_path, _ = resolve_base(cfg.model, bench, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(base_path, cfg.model)
    tokenized = tokenize_benchmark(tokenizer, bench, cases=[case])
    print(decode_example(tokenizer, tokenized, bench, chosen, rejected))
    longest = max(tokenized.length(chosen, case), tokenized.length(rejected, case))
    verdict = "kept" if longest <= cfg.trainer.max_length else "dropped: the study dropped such pairs, never truncated"
    print(f"=== {name} pair {args.pair} of {len(pairs):,} ({args.split} split, seed {cfg.seed}); "
          f"longest side {longest:,} tokens, trainer.max_length {cfg.trainer.max_length:,}: {verdict} ===")
    return 0


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="fetch the study's data, print its stats, dry-run one example",
                                 description="Fetch the study's data, check it (stats) and dry-run its formatting "
                                             "(example).")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("fetch", help="download (or --archive) the study's data, verify it, print its root",
                       description="Fetch the study's published data at the pinned commit into the cache, "
                                   "verify every file against the shipped sha256 manifest, print the root.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--archive", type=Path, help="a local .tar.gz/.tar.xz of the pinned commit (no network)")
    src.add_argument("--url", help="download from this URL instead of GitHub's archive of the pinned commit")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache base (default: $AGENT_SAFETY_DATA_CACHE or the user cache dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("stats", help="cases, trajectories, score histograms and pair counts of a config's data",
                       description="Stats of the data a run with these overrides would use. objective=NAME "
                                   "reports only that objective (default: all).")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=toolemu_gpt5m seed=0 data.root=DIR")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("example", help="dry run: print one decoded DPO example",
                       description="Print one pair exactly as the trainer sees it (decoded tokens). "
                                   "objective=NAME picks the objective (default: the schedule's first stage).")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=toolemu_gpt5m model=tiny")
    p.add_argument("--pair", type=int, default=0, help="index of the pair (default 0)")
    p.add_argument("--split", choices=SPLITS, default="train", help="cases to take pairs from (default train)")
    p.set_defaults(func=cmd_example)

