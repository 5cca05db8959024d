"""``agent-safety judges [overrides] [--against overrides]``: how far two judges agree on the same trajectories.

Each side is the data a run with those Hydra overrides would load (as ``agent-safety data stats`` takes
them); ``--against`` overrides are applied on top of the first side's. Without ``data=``, the first side is
the study's data labelled by gpt-5-mini (``data=toolemu_gpt5m``); without ``--against``, the second is the
only other judge whose labels sit under the same data root (there: Qwen3-32B, ``q32``), so a bare
``agent-safety judges`` compares the study's two judges on its 3,888 trajectories.

It lives with the aggregate because it analyses labels already on disk, as the aggregate analyses run
records; nothing is trained or scored. This module only registers the command (``agent-safety --help``
imports it); ``aggregate.agreement`` holds the statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_safety.aggregate.agreement import compare, format_comparison, labels_of, write_report
from agent_safety.config.compose import compose_config, on_top, with_default

DEFAULT_DATA = "data=toolemu_gpt5m"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("judges", help="agreement of two judges' labels on the same trajectories",
                              description="Compare two judges' labels of the same trajectories, per metric: "
                                          "exact agreement, agreement within one point, quadratic-weighted "
                                          "Cohen's kappa, each judge's mean and the confusion matrix. "
                                          + __doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("overrides", nargs="*", help=f"Hydra overrides of the first judge's data (default {DEFAULT_DATA})")
    p.add_argument("--against", nargs="+", metavar="OVERRIDE", default=None,
                   help="overrides of the second judge's data, applied after the first's (e.g. data=toolemu_q32 "
                        "or data.judge=q32); default: the other judge under the same data root")
    p.add_argument("--out", type=Path, default=None,
                   help="also write judges.json, judges.md, judges.csv and a heatmap per metric here")
    p.add_argument("--no-figures", action="store_true", help="with --out: skip the heatmaps")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=main)
    return p


def judge_folders(root: Path) -> list[str]:
    """The judges whose labels a data root holds (``data/raw_data_by_eval/<judge>/``)."""
    base = root / "data" / "raw_data_by_eval"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def other_judge(root: Path, judge: str) -> str:
    others = [j for j in judge_folders(root) if j != judge]
    if len(others) != 1:
        found = ", ".join(others) or "none"
        raise ValueError(f"{root / 'data' / 'raw_data_by_eval'}: other judges than {judge}: {found}; "
                         "name the second one with --against data.judge=NAME (or --against data=...)")
    return others[0]


def side(overrides: Sequence[str]) -> tuple[Any, Any, Path]:
    """(config, benchmark, data root) of one judge's data."""
    from agent_safety.data.benchmark import load_configured

    cfg = compose_config(overrides)
    bench, root = load_configured(cfg)
    return cfg, bench, root


def names(a: Any, b: Any) -> tuple[str, str]:
    """Each side's name: its judge, or judge@data when both sides have the same judge."""
    if a.data.judge != b.data.judge:
        return str(a.data.judge), str(b.data.judge)
    if a.data.name != b.data.name:
        return f"{a.data.judge}@{a.data.name}", f"{b.data.judge}@{b.data.name}"
    return f"{a.data.judge}@a", f"{b.data.judge}@b"


def run(overrides: Sequence[str], against: Sequence[str] | None) -> tuple[dict[str, Any], Any]:
    """(report header, comparison) of the two judges' labels."""
    first = with_default(overrides, "data", DEFAULT_DATA)
    cfg_a, bench_a, root_a = side(first)
    second = on_top(first, against or [f"data.judge={other_judge(root_a, cfg_a.data.judge)}"])
    cfg_b, bench_b, root_b = side(second)
    name_a, name_b = names(cfg_a, cfg_b)
    comparison = compare(name_a, labels_of(bench_a.trajectories, f"{root_a} ({name_a})"),
                         name_b, labels_of(bench_b.trajectories, f"{root_b} ({name_b})"))
    header = {"judges": {name: {"data": str(cfg.data.name), "judge": str(cfg.data.judge), "root": str(root),
                                "fingerprint": bench.fingerprint, "trajectories": len(bench.trajectories)}
                         for name, cfg, bench, root in ((name_a, cfg_a, bench_a, root_a),
                                                        (name_b, cfg_b, bench_b, root_b))}}
    return header, comparison


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    header, comparison = run(args.overrides, args.against)
    if args.json:
        print(json.dumps({**header, "comparisons": [comparison.to_dict()]}, indent=2))
    else:
        for name, j in header["judges"].items():
            print(f"{name:<8} data {j['data']}, judge {j['judge']}: {j['trajectories']:,} trajectories ({j['root']})")
        print()
        print(format_comparison(comparison))
    if args.out is not None:
        write_report(args.out, header, [comparison], figures=not args.no_figures)
        if not args.json:
            print(f"\nwrote {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0
