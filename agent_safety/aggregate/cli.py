"""``agent-safety aggregate``: the command line of the aggregate; ``aggregate.report`` does the work.

Kept apart so that ``agent-safety --help`` does not import pandas.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from agent_safety.aggregate import DEFAULT_BOOTSTRAP


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``aggregate`` subcommand."""
    p = subparsers.add_parser(
        "aggregate", help="fit the safety–helpfulness frontier over run records",
        description="Collect run records under the run roots (and optionally W&B), fit the linear "
                    "safety–helpfulness frontier with a bootstrap CI, measure each configuration's distance "
                    "from the frontier of the others and persistence, with bootstrap intervals over test cases "
                    "and seeds, and write the tables, frontier.json, a Markdown summary, LaTeX tables and "
                    "figures into --out. With --compare, each run root is one result set (e.g. the study's "
                    "match and cross sets): each is aggregated into OUT/<label>/ and OUT/summary.md puts "
                    "them side by side.")
    p.add_argument("roots", nargs="*", type=Path, help="run roots, searched at any depth for status.json "
                   "(default: $AGENT_SAFETY_RUNS, else ./runs: where launch.py writes)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <root>/aggregate with one run root or none, else ./aggregate)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None, help="also read runs from W&B")
    p.add_argument("--group", default=None, help="only runs of this group (W&B group / run-dir group)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"bootstrap resamples for the intervals: R² (test cases, as the study; and cases + seeds), "
                        f"distances from the frontier and persistence (cases + seeds) (default {DEFAULT_BOOTSTRAP}; "
                        "0 turns them off)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--eval", dest="evaluation", metavar="ID|NAME", default=None,
                   help="the evaluation setting to fit (default: the only one, else the default setting's)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures (faster)")
    p.add_argument("--wandb-log", action="store_true", help="log the tables and figures to a W&B summary run")
    p.add_argument("--compare", action="store_true",
                   help="treat each run root as one result set and compare them side by side")
    p.add_argument("--labels", default=None, metavar="A,B",
                   help="with --compare: comma-separated set labels, one per root (default: the roots' folder "
                        "names)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    if args.compare:
        return compare(args)
    if args.labels is not None:
        raise SystemExit("aggregate: --labels goes with --compare")
    from agent_safety.aggregate.report import print_summary, run_aggregate

    if not args.roots and not args.wandb:  # where launch.py writes (paths.runs_dir's default)
        runs = Path(os.environ.get("AGENT_SAFETY_RUNS") or "runs")
        if not runs.is_dir():
            raise SystemExit(f"aggregate: no run root given and {runs} (the default: $AGENT_SAFETY_RUNS, else ./runs) "
                             "is not a folder; give run roots or --wandb ENTITY/PROJECT")
        args.roots = [runs]
        args.out = args.out or runs / "aggregate"
    if len(args.roots) == 1 and not args.wandb:  # one run root: its results beside its runs, as for the default
        args.out = args.out or args.roots[0] / "aggregate"
    args.out = args.out or Path("aggregate")
    result = run_aggregate(args.roots, args.out, wandb_path=args.wandb, group=args.group,
                           api=getattr(args, "wandb_api", None), n_boot=args.bootstrap,
                           boot_seed=args.bootstrap_seed, level=args.ci, figures=not args.no_figures,
                           wandb_log=args.wandb_log, evaluation=args.evaluation)
    print_summary(result, args.out)
    print(f"wrote {args.out}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """``--compare``: one result set per run root, side by side."""
    from agent_safety.aggregate.compare import print_compare, run_compare

    if args.wandb or args.wandb_log:
        raise SystemExit("aggregate --compare: reads run roots only (no --wandb / --wandb-log)")
    if len(args.roots) < 2:
        raise SystemExit("aggregate --compare: give two or more run roots, one per result set")
    labels = args.labels.split(",") if args.labels is not None else None
    args.out = args.out or Path("aggregate")
    results = run_compare(args.roots, args.out, labels=labels, n_boot=args.bootstrap, boot_seed=args.bootstrap_seed,
                          level=args.ci, figures=not args.no_figures, evaluation=args.evaluation, group=args.group)
    print_compare(results)
    print(f"wrote {args.out}")
    return 0
