"""``aggregate``: collect run records, fit the safety–helpfulness frontier and write every output.

Outputs, all in ``--out``: ``runs.csv``/``runs.parquet`` (the tidy table), ``cases.parquet`` (per-case
scores), ``points.csv`` (per-configuration means, std over seeds, deltas, Pareto flags),
``persistence.csv`` (the terms), ``persistence_ci.csv`` (per beta and pooled, with bootstrap intervals),
``residuals.csv`` (each configuration's distance from the frontier of the others, with its interval),
``frontier.json``, ``skipped.json``, ``summary.md``, ``tables/*.tex`` and ``figures/*.{png,pdf}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agent_safety.aggregate import DEFAULT_BOOTSTRAP, frontier, persistence
from agent_safety.aggregate import residuals as loco
from agent_safety.aggregate.resample import make_draws
from agent_safety.aggregate.tables import ci_text, clean, fmt, md_table
from agent_safety.records.collect import Collection, Skip, collect, read_wandb
from agent_safety.records.identity import default_eval_id


@dataclass
class Result:
    """Everything the aggregate computed, before it is written."""

    collection: Collection
    points: pd.DataFrame
    fit: frontier.Fit
    bootstrap: dict[str, Any]
    terms: pd.DataFrame
    persistence: dict[str, dict[str, float | None]]
    skipped: list[Skip]
    evaluation: dict[str, Any] = field(default_factory=dict)
    """The evaluation setting fitted (``id``, ``name``) and the records of others left out."""
    residuals: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(loco.COLUMNS)))
    """Per configuration: its distance from the line of the others, with its interval (``residuals``)."""
    persistence_ci: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(persistence.INTERVAL_COLUMNS)))
    """Persistence per beta and pooled, with bootstrap intervals (``persistence.intervals``)."""

    @property
    def caveats(self) -> list[str]:
        """Why the frontier fit is not a result, if it is not (too few points, a degenerate interval)."""
        return frontier.fit_caveats(self.fit, self.bootstrap["r2_ci"])

    def frontier_json(self) -> dict[str, Any]:
        """The contents of ``frontier.json``."""
        c = self.collection
        pareto = self.points[self.points["pareto"]]
        return clean({
            **self.fit.to_dict(),
            "r2_ci": self.bootstrap["r2_ci"],
            "caveats": self.caveats,
            "bootstrap": {k: v for k, v in self.bootstrap.items() if k != "r2_ci"},
            "persistence": self.persistence,
            "persistence_ci": persistence.intervals_json(self.persistence_ci),
            "residuals": loco.to_json(self.residuals),
            "evaluation": self.evaluation,
            "persistence_terms": self.terms.to_dict(orient="records"),
            "pareto": pareto[["model", "config", "beta", "d_safety", "d_helpfulness", "safety",
                              "helpfulness"]].to_dict(orient="records"),
            "counts": {"run_dirs": c.n_run_dirs, "runs": int(c.table["run_id"].nunique()),
                       "records": len(c.table), "not_completed": c.not_completed,
                       "duplicates": c.duplicates, "skipped": len(self.skipped)},
            "skipped": [s.to_dict() for s in self.skipped],
        })


def compute(collection: Collection, *, n_boot: int = DEFAULT_BOOTSTRAP, boot_seed: int = 0,
            level: float = 0.95) -> Result:
    """Run the study's recipe on a collection (pure: writes nothing)."""
    table = collection.table
    points = frontier.add_pareto(frontier.add_deltas(frontier.point_means(table)))
    skipped = list(collection.skipped)
    no_base = points[(points["config"] != "base") & points["d_safety"].isna()]
    for model, g in no_base.groupby("model"):
        skipped.append(Skip(f"model {model}", f"no base-model (stage 0) record: its {len(g)} point(s) are "
                                              "left out of the fit"))
    fit = frontier.fit_points(points)
    # One set of draws (cases, then seeds) and one set of cell totals serve every interval.
    cells = (frontier.cell_totals(table, collection.cases, make_draws(table, collection.cases, n_boot, boot_seed))
             if n_boot > 0 and not table.empty else None)
    reps = frontier.replicate_deltas(cells) if cells is not None else None
    boot = frontier.bootstrap_r2(table, collection.cases, n_boot=n_boot, seed=boot_seed, level=level,
                                 replicates=reps)
    terms, p_skipped = persistence.persistence_terms(table)
    skipped.extend(p_skipped)
    return Result(collection, points, fit, boot, terms, persistence.summarize(terms), skipped,
                  residuals=loco.residual_table(points, reps, level),
                  persistence_ci=persistence.intervals(terms, cells, level))


# -------------------------------------------------------------------------------------------- writing


def _tex(text: str) -> str:
    for ch in "\\&%$#_{}":
        text = text.replace(ch, "\\" + ch)
    return text.replace("→", r"$\to$")


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" if not np.isfinite(std) else f"{mean:.3f} $\\pm$ {std:.3f}"


def latex_tables(points: pd.DataFrame, terms: pd.DataFrame, persistence_ci: pd.DataFrame | None = None,
                 residual_table: pd.DataFrame | None = None) -> dict[str, str]:
    """Per-configuration means (± std over seeds), persistence (per beta and pooled, with intervals) and
    the distances from the frontier, as LaTeX tabulars."""
    means = pd.DataFrame({
        "Model": points["model"].map(_tex),
        "Config": points["config"].map(_tex),
        r"$\beta$": points["beta"].map(lambda b: "" if pd.isna(b) else f"{b:g}"),
        "Safety": [_pm(m, s) for m, s in zip(points["safety"], points["safety_std"], strict=True)],
        "Helpfulness": [_pm(m, s) for m, s in zip(points["helpfulness"], points["helpfulness_std"], strict=True)],
        r"$\Delta$S": points["d_safety"].map(lambda v: "" if pd.isna(v) else f"{v:+.3f}"),
        r"$\Delta$H": points["d_helpfulness"].map(lambda v: "" if pd.isna(v) else f"{v:+.3f}"),
        "Seeds": points["n_seeds"],
    })
    out = {"config_means": _tabular(means), "persistence": _tabular(_persistence_tex(terms, persistence_ci))}
    if residual_table is not None and not residual_table.empty:
        r = residual_table
        out["residuals"] = _tabular(pd.DataFrame({
            "Config": r["config"].map(_tex),
            "Residual": r["residual"].map(lambda v: f"{v:+.3f}"),
            "CI": [ci_text(lo, hi, "+.3f") for lo, hi in zip(r["ci_low"], r["ci_high"], strict=True)],
            "Off": r["off_frontier"].map(lambda v: "yes" if v else "no"),
            "Points": r["n_points"],
        }))
    return out


def _persistence_tex(terms: pd.DataFrame, ci: pd.DataFrame | None) -> pd.DataFrame:
    """Persistence rows: the per-beta summary of the terms, plus pooled rows and intervals when given."""
    summ = persistence.summary_table(terms).assign(beta=lambda d: d["beta"].map(lambda b: f"{b:g}"))
    if ci is not None and not ci.empty:
        pooled = terms.groupby("ratio")["value"].agg(["mean", "std", "size"]).rename(columns={"size": "n"})
        pooled = pooled.reindex([r for r in persistence.RATIOS if r in pooled.index]).reset_index()
        summ = pd.concat([summ, pooled.assign(beta=persistence.POOLED)], ignore_index=True)
        summ = summ.merge(ci[["beta", "ratio", "ci_low", "ci_high"]], on=["beta", "ratio"], how="left")
    cols = {
        r"$\beta$": summ["beta"],
        "Ratio": summ["ratio"].map(lambda r: f"Persist({r})"),
        "Mean": summ["mean"].map(lambda v: f"{v:.3f}"),
    }
    if "ci_low" in summ:
        cols["CI"] = [ci_text(lo, hi) for lo, hi in zip(summ["ci_low"], summ["ci_high"], strict=True)]
    cols |= {"Std": summ["std"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"), "Terms": summ["n"]}
    return pd.DataFrame(cols)


def _tabular(df: pd.DataFrame) -> str:
    """A booktabs tabular of already-escaped cells. Written by hand: pandas' to_latex goes through
    Styler and jinja2, which costs ~0.2 s of template compiling for two small tables."""
    lines = [rf"\begin{{tabular}}{{{'l' * df.shape[1]}}}", r"\toprule", " & ".join(map(str, df.columns)) + r" \\",
             r"\midrule"]
    lines += [" & ".join(map(str, row)) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _boot_note(b: Mapping[str, Any], what: str) -> str:
    if not b["n_boot"]:
        return "No bootstrap (--bootstrap 0): no intervals."
    return (f"{b['level']:.0%} percentile intervals from {b['n_boot']} bootstrap replicates resampling {what} "
            f"(seed {b['seed']}).")


def fit_markdown(result: Result) -> list[str]:
    """The fit paragraph: the line, R², and R²'s intervals (cases, as the study; cases and seeds)."""
    f, b = result.fit, result.bootstrap
    seeds = b.get("r2_ci_seeds") or [None, None]
    return [
        f"Δsafety = {fmt(f.slope)} × Δhelpfulness + {fmt(f.intercept)} over n = {f.n} fine-tuned points "
        f"(deltas from each base model): **R² = {fmt(f.r2)}**, r = {fmt(f.r)}; "
        f"{b['level']:.0%} bootstrap CI for R² {ci_text(*b['r2_ci'])} "
        f"({b['n_valid']} of {b['n_boot']} case resamples, seed {b['seed']}); "
        f"resampling seeds too: {ci_text(*seeds)}.", "",
        *[f"> **Not a result:** {note}." for note in result.caveats], *([""] if result.caveats else [])]


def residuals_markdown(result: Result) -> list[str]:
    """The distance-from-the-frontier section: one row per configuration."""
    table = result.residuals
    if table.empty:
        return ["No fine-tuned point with a base model: no distances.", ""]
    rows = [{"configuration": r.config, "residual": fmt(r.residual, "+.3f"),
             f"{result.bootstrap['level']:.0%} CI": ci_text(r.ci_low, r.ci_high, "+.3f"),
             "off the frontier": "**yes**" if r.off_frontier else "no", "points": r.n_points,
             "line without it": f"{fmt(r.slope)} × Δh + {fmt(r.intercept)} (n = {r.n_fit})"}
            for r in table.itertuples(index=False)]
    off = table.loc[table["off_frontier"], "config"].tolist()
    return [
        "Each configuration's mean vertical distance Δsafety − (slope × Δhelpfulness + intercept) from the "
        "line fitted on every *other* configuration's points (leave-one-configuration-out), in safety "
        "points (0–3): positive = safer than the others' trade-off predicts at its helpfulness. "
        + _boot_note(result.bootstrap, "test cases and seeds") + " *Off the frontier*: the interval excludes "
        "zero.", "", md_table(pd.DataFrame(rows)), "",
        f"Off the frontier: {', '.join(off) if off else 'none'}.", ""]


def persistence_markdown(result: Result) -> list[str]:
    """The persistence section: per beta and pooled over betas, each with its interval."""
    ci = result.persistence_ci
    if ci.empty:
        return ["No persistence ratio could be computed (needs S, H, S→H and H→S per judge, model, beta).", ""]
    level = f"{result.bootstrap['level']:.0%} CI"
    rows = []
    for beta, g in ci.groupby("beta", sort=False):
        by = g.set_index("ratio")
        row: dict[str, Any] = {"β": beta}
        for name in persistence.RATIOS:
            has = name in by.index
            row[f"Persist({name})"] = fmt(by.at[name, "value"]) if has else "n/a"
            row[f"{level} ({name})"] = ci_text(by.at[name, "ci_low"], by.at[name, "ci_high"]) if has else "n/a"
        row["terms (S/H)"] = "/".join(str(by.at[n, "n_terms"]) if n in by.index else "0" for n in persistence.RATIOS)
        rows.append(row)
    return ["Per beta, the mean of the per-(judge, model) terms; *pooled*: the mean over every beta's terms. "
            + _boot_note(result.bootstrap, "test cases and seeds"), "", md_table(pd.DataFrame(rows)), ""]


def summary_markdown(result: Result, figures: Sequence[Path], out: Path) -> str:
    """A short human-readable report of the aggregate."""
    c = result.collection
    lines = [
        "# Safety–helpfulness frontier", "",
        f"{len(c.table)} records from {c.table['run_id'].nunique()} completed runs ({c.n_run_dirs} run dirs). "
        f"{c.not_completed} runs not completed were left out; {c.duplicates} duplicate records dropped; "
        f"{len(result.skipped)} items skipped (see `skipped.json`).", "",
        f"Evaluation setting: {_eval_line(result.evaluation)}.", "",
        "## Fit", "", *fit_markdown(result),
        "## Distance from the frontier, per configuration", "", *residuals_markdown(result),
        "## Persistence", "", *persistence_markdown(result),
    ]
    p = result.points
    pareto = p[p["pareto"]][["model", "config", "beta", "d_helpfulness", "d_safety"]]
    lines += ["## Pareto-optimal points (deltas, all models pooled)", "", md_table(pareto), "",
              "## Per-configuration means (std over seeds)", "",
              md_table(p[["model", "config", "beta", "safety", "safety_std", "helpfulness", "helpfulness_std",
                           "d_safety", "d_helpfulness", "n_seeds", "n_records"]]), ""]
    if result.skipped:
        lines += ["## Skipped", ""] + [f"- `{s.source}`: {s.reason}" for s in result.skipped[:50]]
        if len(result.skipped) > 50:
            lines.append(f"- … and {len(result.skipped) - 50} more in `skipped.json`")
        lines.append("")
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs] + [""]
    return "\n".join(lines)


def _eval_line(evaluation: Mapping[str, Any]) -> str:
    others = evaluation.get("left_out") or {}
    line = f"`{evaluation.get('id') or '-'}` ({evaluation.get('name') or 'unnamed'})"
    if others:
        line += "; records of other settings left out: " + ", ".join(
            f"`{k}` ({v['name']}, {v['records']} records)" for k, v in others.items())
    return line


def pick_evaluation(collection: Collection, wanted: str | None) -> tuple[Collection, dict[str, Any]]:
    """Keep the records of one evaluation setting: ``wanted`` (an eval id or name), else the only one, else
    the default setting's. One fit never mixes two settings; SystemExit names the choices otherwise."""
    table = collection.table
    settings = table.groupby("eval_id", sort=True).agg(name=("eval_name", "first"), records=("run_id", "size"))
    listing = ", ".join(f"{i or '-'} ({r['name'] or 'unnamed'}, {r['records']} records)"
                        for i, r in settings.iterrows())
    if wanted is not None:
        chosen = [i for i, r in settings.iterrows() if wanted in (i, r["name"])]
        if not chosen:
            raise SystemExit(f"aggregate: --eval {wanted}: no such evaluation setting (found: {listing})")
        if len(chosen) > 1:
            raise SystemExit(f"aggregate: --eval {wanted} names several settings ({', '.join(chosen)}): "
                             "give an eval id")
        pick = chosen[0]
    elif len(settings) <= 1:
        pick = settings.index[0] if len(settings) else ""
    elif default_eval_id() in settings.index:
        pick = default_eval_id()
    else:
        raise SystemExit(f"aggregate: records of {len(settings)} evaluation settings: {listing}; "
                         "pick one with --eval ID|NAME")
    others = {str(i): {"name": str(r["name"]), "records": int(r["records"])} for i, r in settings.iterrows()
              if i != pick}
    name = str(settings.loc[pick, "name"]) if pick in settings.index else ""
    keep = (table["eval_id"] == pick).to_numpy()
    return (_subset(collection, keep) if others else collection), {"id": str(pick), "name": name,
                                                                   "left_out": others}


def _cases_with_keys(table: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    rows = cases["row"].to_numpy()
    run_codes, run_ids = pd.factorize(table["run_id"])
    judge_codes, judges = pd.factorize(table["judge"])
    return pd.DataFrame({
        "run_id": pd.Categorical.from_codes(run_codes[rows], categories=run_ids),
        "stage": table["stage"].to_numpy()[rows],
        "judge": pd.Categorical.from_codes(judge_codes[rows], categories=judges),
        "case": cases["case"].to_numpy(),
        "safety": cases["safety"].to_numpy(),
        "helpfulness": cases["helpfulness"].to_numpy(),
    })


def write_outputs(result: Result, out: Path, *, figures: bool = True) -> list[Path]:
    """Write every output into ``out``; returns the figure paths."""
    out.mkdir(parents=True, exist_ok=True)
    table = result.collection.table
    table.to_csv(out / "runs.csv", index=False)
    table.to_parquet(out / "runs.parquet", index=False)
    _cases_with_keys(table, result.collection.cases).to_parquet(out / "cases.parquet", index=False)
    result.points.to_csv(out / "points.csv", index=False)
    result.terms.to_csv(out / "persistence.csv", index=False)
    result.persistence_ci.to_csv(out / "persistence_ci.csv", index=False)
    result.residuals.to_csv(out / "residuals.csv", index=False)
    (out / "frontier.json").write_text(json.dumps(result.frontier_json(), indent=1, ensure_ascii=False,
                                                  allow_nan=False) + "\n", encoding="utf-8")
    (out / "skipped.json").write_text(json.dumps([s.to_dict() for s in result.skipped], indent=1,
                                                 ensure_ascii=False) + "\n", encoding="utf-8")
    tables = out / "tables"
    tables.mkdir(exist_ok=True)
    for name, tex in latex_tables(result.points, result.terms, result.persistence_ci, result.residuals).items():
        (tables / f"{name}.tex").write_text(tex, encoding="utf-8")
    fig_paths: list[Path] = []
    if figures:
        from agent_safety.aggregate.figures import make_figures  # matplotlib is slow to import: only when drawing

        fig_paths = make_figures(result.points, result.fit, result.terms, out / "figures",
                                 residual_table=result.residuals, persistence_ci=result.persistence_ci,
                                 caveats=result.caveats)
    (out / "summary.md").write_text(summary_markdown(result, fig_paths, out), encoding="utf-8")
    return fig_paths


def log_to_wandb(result: Result, out: Path, figures: Sequence[Path], *, project: str, entity: str | None,
                 roots: Sequence[Path] = (), wandb_module: Any = None) -> None:
    """Log the tables, fit and figures to one W&B summary run (offline unless WANDB_MODE says otherwise)."""
    if wandb_module is None:
        import wandb as wandb_module
    run = wandb_module.init(project=project, entity=entity, job_type="aggregate", name="frontier",
                            dir=str(out), mode=os.environ.get("WANDB_MODE", "offline"),
                            config={"roots": [str(r) for r in roots], "n_boot": result.bootstrap["n_boot"]})
    try:
        run.log({"runs": wandb_module.Table(dataframe=result.collection.table),
                 "points": wandb_module.Table(dataframe=result.points),
                 **{f"figures/{p.stem}": wandb_module.Image(str(p)) for p in figures if p.suffix == ".png"}})
        fj = result.frontier_json()
        run.summary.update({k: fj[k] for k in ("r2", "r", "slope", "intercept", "n", "r2_ci")}
                           | {f"persist_{r}/beta_{b}": v[r] for b, v in fj["persistence"].items() for r in v})
    finally:
        run.finish()


def run_aggregate(roots: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                  wandb_path: str | None = None, group: str | None = None, api: Any = None,
                  n_boot: int = DEFAULT_BOOTSTRAP, boot_seed: int = 0, level: float = 0.95,
                  figures: bool = True, wandb_log: bool = False, wandb_module: Any = None,
                  evaluation: str | None = None) -> Result:
    """Collect, compute and write. Raises SystemExit with a one-line message when nothing is usable."""
    roots = [Path(r) for r in roots]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"aggregate: run root(s) not found: {', '.join(missing)}")
    extra, extra_skipped, extra_nc = [], [], 0
    if wandb_path:
        try:
            if api is None:
                import wandb

                api = wandb.Api()
            extra, extra_skipped, extra_nc = read_wandb(api, wandb_path, group)
        except Exception as exc:  # noqa: BLE001 - any API failure becomes one clear line
            raise SystemExit(f"aggregate: reading W&B {wandb_path} failed: {type(exc).__name__}: {exc}") from None
    collection = collect(roots, extra=extra, extra_skipped=extra_skipped, extra_not_completed=extra_nc)
    if group:
        keep = (collection.table["group"] == group).to_numpy()
        collection = _subset(collection, keep)
    if collection.table.empty:
        where = ", ".join(map(str, roots)) + (f" and W&B {wandb_path}" if wandb_path else "")
        raise SystemExit(f"aggregate: no completed run records found in {where or 'no roots'} "
                         f"({collection.n_run_dirs} run dirs, {collection.not_completed} not completed, "
                         f"{len(collection.skipped)} skipped)")
    collection, chosen = pick_evaluation(collection, evaluation)
    result = compute(collection, n_boot=n_boot, boot_seed=boot_seed, level=level)
    result.evaluation = chosen
    out = Path(out)
    fig_paths = write_outputs(result, out, figures=figures)
    if wandb_log:
        project, _, entity = _split_wandb_path(wandb_path or "agent-safety")
        log_to_wandb(result, out, fig_paths, project=project, entity=entity, roots=roots,
                     wandb_module=wandb_module)
    return result


def _split_wandb_path(path: str) -> tuple[str, str, str | None]:
    entity, sep, project = path.rpartition("/")
    return project, sep, entity or None


def _subset(c: Collection, keep: np.ndarray) -> Collection:
    """The collection restricted to some rows of its table, case rows renumbered."""
    new_index = np.full(len(keep), -1)
    new_index[keep] = np.arange(int(keep.sum()))
    cases = c.cases[keep[c.cases["row"].to_numpy()]] if len(c.cases) else c.cases
    cases = cases.assign(row=new_index[cases["row"].to_numpy()]).reset_index(drop=True)
    return Collection(c.table[keep].reset_index(drop=True), cases, c.skipped, c.not_completed, c.duplicates,
                      c.n_run_dirs)


def print_summary(result: Result, out: Path) -> None:
    """The command's report on the terminal: counts, the setting, the fit, persistence, what was skipped."""
    c, f = result.collection, result.fit
    lo, hi = result.bootstrap["r2_ci"]
    print(f"{len(c.table)} records from {c.table['run_id'].nunique()} runs; {c.not_completed} runs not "
          f"completed were left out; {len(result.skipped)} skipped")
    print(f"evaluation setting: {_eval_line(result.evaluation)}".replace("`", ""))
    print(f"frontier: R² = {fmt(f.r2)} (r = {fmt(f.r)}, slope = {fmt(f.slope)}, n = {f.n}), "
          f"{result.bootstrap['level']:.0%} CI [{fmt(lo)}, {fmt(hi)}]")
    for note in result.caveats:
        print(f"  NOT A RESULT: {note}")
    for beta, g in result.persistence_ci.groupby("beta", sort=False):
        print(f"persistence beta={beta}: " + ", ".join(
            f"Persist({r.ratio}) = {fmt(r.value)} {ci_text(r.ci_low, r.ci_high)}" for r in g.itertuples(index=False)))
    for r in result.residuals.itertuples(index=False):
        print(f"distance from the frontier of the others: {r.config} {fmt(r.residual, '+.3f')} "
              f"{ci_text(r.ci_low, r.ci_high, '+.3f')}{'  off the frontier' if r.off_frontier else ''}")
    if result.skipped:
        print(f"{len(result.skipped)} skipped (see {out / 'skipped.json'}):", file=sys.stderr)
        for s in result.skipped[:5]:
            print(f"  {s.source}: {s.reason}", file=sys.stderr)
