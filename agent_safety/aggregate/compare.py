"""``aggregate --compare``: two (or more) result sets side by side, e.g. the study's judge swap.

The study published each run scored by the judge that labelled its training data (match) and by the
other judge (cross). Each set is aggregated on its own (its full outputs go to ``OUT/<label>/``) with the
same bootstrap seed, so sets of the same cases and seeds (as match and cross are) draw the same
replicates. ``OUT/summary.md`` puts their fit, R² and its intervals, persistence and distances from the
frontier in adjacent columns, ``OUT/compare.json`` carries the same numbers, and
``OUT/figures/compare.{png,pdf}`` draws both frontiers and both sets' distances.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from agent_safety.aggregate import DEFAULT_BOOTSTRAP, persistence
from agent_safety.aggregate.report import Result, run_aggregate
from agent_safety.aggregate.residuals import ordered_configs
from agent_safety.aggregate.tables import ci_text, clean, fmt, md_table

#: Keys of each set's ``frontier.json`` that ``compare.json`` repeats.
JSON_KEYS: tuple[str, ...] = ("slope", "intercept", "r", "r2", "n", "r2_ci", "bootstrap", "persistence",
                              "persistence_ci", "residuals", "evaluation", "counts")


def set_labels(roots: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """One label per set: the given ones, else each root's folder name (made unique with its parent's
    name, then a number). Labels name sub-folders, so they must be plain names."""
    if labels is not None:
        labels = [lab.strip() for lab in labels]
        if len(labels) != len(roots):
            raise SystemExit(f"aggregate --compare: {len(labels)} label(s) for {len(roots)} result sets: "
                             "give one per run root")
        bad = [lab for lab in labels if not re.fullmatch(r"[\w.+-]+", lab) or lab in (".", "..")]
        if bad:
            raise SystemExit(f"aggregate --compare: labels must be plain names (letters, digits, ._+-): {bad}")
        if len(set(labels)) != len(labels):
            raise SystemExit(f"aggregate --compare: labels must differ: {list(labels)}")
        return list(labels)
    paths = [Path(os.path.abspath(r)) for r in roots]  # as given (a symlink keeps its own name)
    names = [p.name or "root" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}-{p.name}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    return [re.sub(r"[^\w.+-]", "_", n) for n in names]


def run_compare(roots: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                labels: Sequence[str] | None = None, n_boot: int = DEFAULT_BOOTSTRAP, boot_seed: int = 0,
                level: float = 0.95, figures: bool = True, evaluation: str | None = None,
                group: str | None = None) -> dict[str, Result]:
    """Aggregate each root as one result set into ``out/<label>/`` and write the side-by-side report."""
    roots = [Path(r) for r in roots]
    if len(roots) < 2:
        raise SystemExit("aggregate --compare: give two or more run roots, one per result set")
    names = set_labels(roots, labels)
    out = Path(out)
    results = {}
    for name, root in zip(names, roots, strict=True):
        try:
            results[name] = run_aggregate([root], out / name, group=group, n_boot=n_boot, boot_seed=boot_seed,
                                          level=level, figures=figures, evaluation=evaluation)
        except SystemExit as exc:  # name the set whose records are the problem
            raise SystemExit(f"{exc.code} [result set {name!r}]") from None
    fig_paths = []
    if figures:
        from agent_safety.aggregate.figures import compare_plot  # matplotlib: only when drawing

        fig_paths = compare_plot({n: (r.points, r.fit, r.residuals) for n, r in results.items()}, out / "figures")
    (out / "compare.json").write_text(json.dumps(compare_json(results, roots), indent=1, ensure_ascii=False,
                                                 allow_nan=False) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(compare_markdown(results, roots, fig_paths, out), encoding="utf-8")
    return results


def compare_json(results: Mapping[str, Result], roots: Sequence[Path]) -> dict[str, Any]:
    """{"labels": [...], "sets": {label: {"root", the fit, intervals, persistence, residuals, ...}}}."""
    sets = {}
    for (name, result), root in zip(results.items(), roots, strict=True):
        fj = result.frontier_json()
        sets[name] = {"root": str(root), "out": name} | {k: fj[k] for k in JSON_KEYS}
    return clean({"labels": list(results), "sets": sets})


def fit_rows(results: Mapping[str, Result]) -> pd.DataFrame:
    """The fit, one row per quantity, one column per set."""
    rows: dict[str, dict[str, str]] = {}
    for name, r in results.items():
        f, b = r.fit, r.bootstrap
        level = f"{b['level']:.0%}"
        col = {"records / runs": f"{len(r.collection.table)} / {r.collection.table['run_id'].nunique()}",
               "evaluation setting": str(r.evaluation.get("id") or "-"), "points (n)": str(f.n),
               "slope": fmt(f.slope), "intercept": fmt(f.intercept), "r": fmt(f.r), "**R²**": fmt(f.r2),
               f"R² {level} CI, cases": ci_text(*b["r2_ci"]),
               f"R² {level} CI, cases + seeds": ci_text(*(b.get("r2_ci_seeds") or [None, None])),
               "not a result": "; ".join(r.caveats) or "-"}
        for key, value in col.items():
            rows.setdefault(key, {})[name] = value
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("").reset_index()


def persistence_rows(results: Mapping[str, Result]) -> pd.DataFrame:
    """Persistence per beta and pooled, one row per (beta, ratio), one column per set: "value [lo, hi]"."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for name, r in results.items():
        for t in r.persistence_ci.itertuples(index=False):
            cells.setdefault((t.beta, t.ratio), {})[name] = f"{fmt(t.value)} {ci_text(t.ci_low, t.ci_high)}"
    betas = sorted({b for b, _ in cells if b != persistence.POOLED}, key=float) + [persistence.POOLED]
    rows = [{"β": b, "ratio": f"Persist({ratio})"} | {n: cells[(b, ratio)].get(n, "n/a") for n in results}
            for b in betas for ratio in persistence.RATIOS if (b, ratio) in cells]
    return pd.DataFrame(rows, columns=["β", "ratio", *results])


def residual_rows(results: Mapping[str, Result]) -> pd.DataFrame:
    """Distance from the frontier per configuration, one column per set: "+0.115 [+0.048, +0.194] *"."""
    tables = {n: r.residuals.set_index("config") for n, r in results.items()}
    configs = ordered_configs(pd.concat([pd.Series(t.index, dtype=object) for t in tables.values()]))
    rows = []
    for config in configs:
        row = {"configuration": config}
        for name, t in tables.items():
            if config not in t.index:
                row[name] = "n/a"
                continue
            x = t.loc[config]
            row[name] = (f"{fmt(x['residual'], '+.3f')} {ci_text(x['ci_low'], x['ci_high'], '+.3f')}"
                         + (" **off**" if x["off_frontier"] else ""))
        rows.append(row)
    return pd.DataFrame(rows, columns=["configuration", *results])


def compare_markdown(results: Mapping[str, Result], roots: Sequence[Path], figures: Sequence[Path],
                     out: Path) -> str:
    """The side-by-side report."""
    names = list(results)
    first = next(iter(results.values())).bootstrap
    boot = (f"{first['level']:.0%} percentile intervals from {first['n_boot']} bootstrap replicates (seed "
            f"{first['seed']} for every set)" if first["n_boot"] else "no bootstrap (--bootstrap 0)")
    lines = [f"# Frontier comparison: {' vs '.join(names)}", "",
             *[f"- **{n}**: `{root}` (full outputs in `{n}/`)" for n, root in zip(names, roots, strict=True)], "",
             "## Fit", "", md_table(fit_rows(results)), "",
             "## Persistence", "",
             f"Mean of the per-(judge, model) terms per beta and over every beta (pooled); {boot}, resampling "
             "test cases and seeds.", "", md_table(persistence_rows(results)), "",
             "## Distance from the frontier, per configuration", "",
             "Mean vertical distance of each configuration's points from the line fitted on every other "
             f"configuration's points (safety points, 0–3); {boot}, resampling test cases and seeds. "
             "**off**: the interval excludes zero.", "", md_table(residual_rows(results)), ""]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        lines += ["## Figure", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs] + [""]
    return "\n".join(lines)


def print_compare(results: Mapping[str, Result]) -> None:
    """The terminal version: one line per set for the fit, then the persistence and residual tables."""
    for name, r in results.items():
        f, b = r.fit, r.bootstrap
        print(f"{name}: R² = {fmt(f.r2)} (r = {fmt(f.r)}, slope = {fmt(f.slope)}, n = {f.n}), "
              f"{b['level']:.0%} CI {ci_text(*b['r2_ci'])}")
        for note in r.caveats:
            print(f"  NOT A RESULT: {note}")
    for df in (persistence_rows(results), residual_rows(results)):
        print(df.to_string(index=False).replace("**", ""))
