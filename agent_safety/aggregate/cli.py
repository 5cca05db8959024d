"""``agent-safety aggregate``: the command line of the aggregate; ``aggregate.report`` does the work.

Kept apart so that ``agent-safety --help`` does not import pandas.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_BOOTSTRAP = 1000


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``aggregate`` subcommand."""
    p = subparsers.add_parser(
        "aggregate", help="fit the safety–helpfulness frontier over run records",
        description="Collect run records under the run roots (and optionally W&B), fit the linear "
                    "safety–helpfulness frontier with a bootstrap CI, compute persistence, and write the "
                    "tables, frontier.json, a Markdown summary, LaTeX tables and figures into --out.")
    p.add_argument("roots", nargs="*", type=Path, help="run roots, searched at any depth for status.json")
    p.add_argument("--out", type=Path, default=Path("aggregate"), help="output folder (default: ./aggregate)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None, help="also read runs from W&B")
    p.add_argument("--group", default=None, help="only runs of this group (W&B group / run-dir group)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"case resamples for the R² CI (default {DEFAULT_BOOTSTRAP}; 0 turns it off)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the R² interval")
    p.add_argument("--eval", dest="evaluation", metavar="ID|NAME", default=None,
                   help="the evaluation setting to fit (default: the only one, else the default setting's)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures (faster)")
    p.add_argument("--wandb-log", action="store_true", help="log the tables and figures to a W&B summary run")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from agent_safety.aggregate.report import print_summary, run_aggregate

    if not args.roots and not args.wandb:
        raise SystemExit("aggregate: give at least one run root or --wandb ENTITY/PROJECT")
    result = run_aggregate(args.roots, args.out, wandb_path=args.wandb, group=args.group,
                           api=getattr(args, "wandb_api", None), n_boot=args.bootstrap,
                           boot_seed=args.bootstrap_seed, level=args.ci, figures=not args.no_figures,
                           wandb_log=args.wandb_log, evaluation=args.evaluation)
    print_summary(result, args.out)
    print(f"wrote {args.out}")
    return 0
