"""Benchmark of the aggregate: the study's published match set, and 10,000 synthetic local run records.

Goals (2-core CPU): import + fit of the match set < 3 s, < 6 s with the figures; the whole report on the
match set (import, then the aggregate with the R² interval, each configuration's distance from the
frontier and persistence with their intervals over 1000 resamples of cases and seeds, tables and every
figure) < 10 s; aggregating 10,000 local run records < 2 s. Each case is timed in a fresh process through
the real CLI (interpreter start and imports included) and in-process (the work alone, modules already
imported).

    python bench/bench_aggregate.py [--archive PATH] [--records 10000] [--repeat 3] [--skip-local]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "toolemu" / "upstream-results-match.tar.xz"
SCHEDULES = {"S": ["safety"], "H": ["helpfulness"], "SH": ["both"], "S_H": ["safety", "helpfulness"],
             "H_S": ["helpfulness", "safety"]}


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "agent_safety.cli", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(ROOT)})


#: The evaluation setting the synthetic records were scored with.
EVAL_ID = "e3637420"


def write_synthetic_runs(root: Path, n_runs: int | None = None, n_lines: int | None = None) -> tuple[int, int]:
    """Run dirs as local runs write them: schedules cycling S, H, SH, S_H, H_S over 4 models, 3 seeds and
    2 betas, each line scored on its seed's test split of 144 cases (72 per-case scores per metric).
    Stops at n_runs run dirs or n_lines metrics lines; returns (run dirs, lines)."""
    from agent_safety.data.split import split_cases

    rng = np.random.default_rng(0)
    tests = {seed: split_cases(144, seed)[1] for seed in range(3)}
    names = list(SCHEDULES)
    lines = i = 0
    while (n_runs is None or i < n_runs) and (n_lines is None or lines < n_lines):
        schedule = names[i % len(names)]
        model, seed, beta = f"model{rng.integers(4)}", int(rng.integers(3)), float(rng.choice([0.05, 0.1]))
        run_id, group = f"r{i:05d}", f"group{i % 10}"
        d = root / group / run_id
        d.mkdir(parents=True)
        cases = tests[seed]
        recs = []
        for stage in range(len(SCHEDULES[schedule]) + 1):
            cs = rng.integers(0, 4, len(cases)).astype(float)
            ch = rng.integers(0, 4, len(cases)).astype(float)
            recs.append(json.dumps({
                "run_id": run_id, "group": group, "model": model, "data": "synthetic", "judge": "synthetic",
                "schedule": schedule, "stage": stage, "objectives": SCHEDULES[schedule][:stage],
                "label_judges": ["synthetic"] * stage, "beta": beta, "seed": seed, "safety": cs.mean(),
                "helpfulness": ch.mean(), "pref_acc_safety": 0.6, "pref_acc_helpfulness": 0.55,
                "n_test_cases": len(cases), "pairs_used": 100, "pairs_dropped": 1, "cases": cases,
                "case_safety": cs.tolist(), "case_helpfulness": ch.tolist(), "eval_id": EVAL_ID,
                "eval_name": "estimate"}, sort_keys=True))
        lines += len(recs)
        i += 1
        ev = d / "eval" / EVAL_ID
        ev.mkdir(parents=True)
        (ev / "metrics.jsonl").write_text("\n".join(recs) + "\n")
        (ev / "status.json").write_text(json.dumps({"status": "completed", "eval_id": EVAL_ID}))
        (d / "status.json").write_text(json.dumps({"run_id": run_id, "status": "completed", "error": None}))
    return i, lines


def time_local(label: str, local: Path, out: Path, repeat: int) -> list[tuple[str, float, str]]:
    from agent_safety.aggregate import report as aggregate

    return [
        (f"{label}: aggregate (in-process)",
         best_of(repeat, lambda: aggregate.run_aggregate([local], out, figures=False)), "goal < 2 s"),
        (f"{label}: aggregate (CLI process)",
         best_of(repeat, lambda: cli("aggregate", str(local), "--out", str(out), "--no-figures")), "goal < 2 s"),
        (f"{label}: aggregate + figures (CLI process)",
         best_of(repeat, lambda: cli("aggregate", str(local), "--out", str(out))), ""),
    ]


def whole_report(up: Path, tmp: Path, repeat: int) -> list[tuple[str, float, str]]:
    """The whole report, as a user runs it: ``import-published`` then ``aggregate`` with every section and
    figure, each a fresh CLI process into fresh folders; and ``aggregate --compare`` of the set with itself."""
    counter = iter(range(10_000))

    def once() -> None:
        i = next(counter)
        runs = tmp / f"whole-runs-{i}"
        cli("import-published", str(up), "--out", str(runs))
        cli("aggregate", str(runs), "--out", str(tmp / f"whole-out-{i}"))

    runs = tmp / "whole-runs-compare"
    cli("import-published", str(up), "--out", str(runs))
    return [("match set: WHOLE REPORT, import + aggregate + every figure (2 CLI processes)", best_of(repeat, once),
             "goal < 10 s"),
            ("match set vs itself: aggregate --compare, every figure (CLI process)",
             best_of(repeat, lambda: cli("aggregate", str(runs), str(runs), "--compare", "--labels", "a,b",
                                         "--out", str(tmp / "compare-out"))), "")]


def intervals_only(runs: Path) -> None:
    """The bootstrap's share of the aggregate: draws, cell totals, R² intervals, distances, persistence."""
    from agent_safety.aggregate import frontier, persistence, residuals
    from agent_safety.aggregate.resample import make_draws
    from agent_safety.records.collect import collect

    c = collect([runs])
    points = frontier.add_deltas(frontier.point_means(c.table))
    cells = frontier.cell_totals(c.table, c.cases, make_draws(c.table, c.cases, 1000, 0))
    reps = frontier.replicate_deltas(cells)
    frontier.bootstrap_r2(c.table, c.cases, replicates=reps)
    residuals.residual_table(points, reps)
    persistence.intervals(persistence.persistence_terms(c.table)[0], cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=ARCHIVE, help="upstream-results-match.tar.xz")
    ap.add_argument("--records", type=int, default=10_000,
                    help="synthetic local records: timed as that many metrics lines, and as that many run dirs")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    ap.add_argument("--skip-local", action="store_true", help="time the published match set only")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from agent_safety.aggregate import report as aggregate
    from agent_safety.records import published

    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-aggregate-") as tmp:
        tmp = Path(tmp)
        if args.archive.is_file():
            up = tmp / "upstream"
            with tarfile.open(args.archive, "r:xz") as tar:
                tar.extractall(up, filter="data")
            runs, out = tmp / "published-runs", tmp / "published-out"

            def imp() -> None:
                published.import_published(up, runs)

            def fit(figures: bool) -> Callable[[], object]:
                return lambda: aggregate.run_aggregate([runs], out, figures=figures)

            t_imp = best_of(args.repeat, imp)
            t_fit = best_of(args.repeat, fit(False))
            t_fig = best_of(args.repeat, fit(True))
            rows += [("match set: import (in-process)", t_imp, ""),
                     ("match set: fit + outputs, no figures (in-process)", t_fit, ""),
                     ("match set: import + fit (in-process)", t_imp + t_fit, "goal < 3 s"),
                     ("match set: import + fit + figures (in-process)", t_imp + t_fig, "goal < 6 s")]
            t_cli_imp = best_of(args.repeat, lambda: cli("import-published", str(up), "--out", str(runs)))
            t_cli_fit = best_of(args.repeat, lambda: cli("aggregate", str(runs), "--out", str(out),
                                                         "--no-figures"))
            t_cli_fig = best_of(args.repeat, lambda: cli("aggregate", str(runs), "--out", str(out)))
            rows += [("match set: import + fit (2 CLI processes)", t_cli_imp + t_cli_fit, "goal < 3 s"),
                     ("match set: import + fit + figures (2 CLI processes)", t_cli_imp + t_cli_fig, "goal < 6 s")]
            rows += whole_report(up, tmp, args.repeat)
            rows += [("match set: intervals alone (draws, R², distances, persistence; in-process)",
                      best_of(args.repeat, lambda: intervals_only(runs)), "")]
        else:
            print(f"skipping the match set: {args.archive} is absent", file=sys.stderr)

        for kind, kw in (() if args.skip_local else
                         (("metrics lines", {"n_lines": args.records}), ("run dirs", {"n_runs": args.records}))):
            local = tmp / f"local-{kind[:3]}"
            n_dirs, n_lines = write_synthetic_runs(local, **kw)
            rows += time_local(f"{args.records:,} local {kind} ({n_dirs:,} runs, {n_lines:,} lines)", local,
                               tmp / f"out-{kind[:3]}", args.repeat)

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  seconds  note   (best of {args.repeat}, {os.cpu_count()} CPUs)")
    for name, secs, note in rows:
        print(f"{name:<{width}}  {secs:7.2f}  {note}")


if __name__ == "__main__":
    main()
