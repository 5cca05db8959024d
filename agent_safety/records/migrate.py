"""``agent-safety migrate RUNS``: bring run dirs written before evaluation settings into today's layout.

A version-1 run dir keeps its stage records in ``metrics.jsonl`` at its top; today they live in
``eval/<eval_id>/`` beside a ``stages.jsonl`` of training facts (``records.rundir``). Runs that ran the
default estimate keep their run ids; a run scored with other estimate settings had those settings in its
id, so its folder moves to the id of what it trained. A launch migrates its own run dir as it starts; this
command does a whole runs dir at once (``aggregate`` reads either layout).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent_safety.records.identity import eval_id, eval_setting, run_id
from agent_safety.records.rundir import RunDir
from agent_safety.store.io import atomic_write


@dataclass
class Migration:
    moved: list[tuple[str, str]] = field(default_factory=list)
    """(old run dir, new run dir) of runs whose id changed."""
    migrated: int = 0
    skipped: list[str] = field(default_factory=list)


def migrate_run_dir(rd: RunDir, dry_run: bool = False) -> tuple[RunDir, str | None]:
    """Migrate one version-1 run dir; returns its run dir now and why it was left alone, if it was."""
    config = rd.config()
    if not config.get("eval") or not config.get("schedule"):
        return rd, "no config.yaml to derive its ids from"
    new = RunDir(rd.root.parent / run_id(config))
    if new.root != rd.root and new.root.exists():
        return rd, f"{new.root} exists already"
    if dry_run:
        return new, None
    if new.root != rd.root:
        _rewrite_run_id(rd, new.root.name)
        os.replace(rd.root, new.root)
    new.migrate_legacy(eval_id(config), {"name": config["eval"].get("name", "estimate"), **eval_setting(config)})
    return new, None


def _rewrite_run_id(rd: RunDir, new_id: str) -> None:
    lines = [json.loads(x) for x in rd.legacy_metrics_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    atomic_write(rd.legacy_metrics_path, "".join(json.dumps({**r, "run_id": new_id}, sort_keys=True) + "\n"
                                                 for r in lines))
    status = rd.status()
    if status:
        rd.set_status(status["status"], run_id=new_id, migrated_from=rd.root.name)


def migrate(runs: Path, dry_run: bool = False) -> Migration:
    from agent_safety.records.collect import find_run_dirs

    out = Migration()
    for root in find_run_dirs([runs]):
        rd = RunDir(root)
        if not rd.is_legacy():
            continue
        new, why = migrate_run_dir(rd, dry_run)
        if why:
            out.skipped.append(f"{root}: {why}")
            continue
        out.migrated += 1
        if new.root != root:
            out.moved.append((str(root), str(new.root)))
    return out


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("migrate", help="move run dirs written before evaluation settings to today's layout",
                              description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("runs", type=Path, help="a runs dir (searched at any depth)")
    p.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    if not args.runs.is_dir():
        raise FileNotFoundError(f"{args.runs}: no such runs dir")
    m = migrate(args.runs, args.dry_run)
    verb = "would migrate" if args.dry_run else "migrated"
    print(f"{verb} {m.migrated} run dir(s); {len(m.moved)} move to a new run id; {len(m.skipped)} left alone")
    for old, new in m.moved:
        print(f"  {old} -> {new}")
    for line in m.skipped:
        print(f"  left alone: {line}")
    return 0
