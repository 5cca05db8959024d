"""Seaborn figures of the frontier, written as PNG and PDF (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from agent_safety.aggregate.frontier import CONFIG_ORDER, Fit, fit_caveats  # noqa: E402
from agent_safety.aggregate.persistence import POOLED, RATIOS
from agent_safety.aggregate.persistence import intervals as point_intervals

FORMATS: tuple[str, ...] = ("png", "pdf")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")


#: Seaborn's "colorblind" colours in the order the configurations take them: blue, orange, green, reddish purple,
#: sky blue, then the rest. Its vermillion (3) sits next to its orange for a red-green colour-blind reader, and
#: its grey (7) is the base's, so neither is given to a configuration.
CONFIG_COLOURS: tuple[int, ...] = (0, 1, 2, 4, 9, 5, 8, 6, 3)
#: The persistence ratios' colours: the first stage's objective's (S: blue, H: orange), as in the frontier.
RATIO_COLOURS: Mapping[str, int] = {"S": 0, "H": 1}
#: The frontier's axes span at least this much either side of the base (0–3 scale): effects of a few hundredths
#: stay a few hundredths on the page instead of filling it.
MIN_HALF_SPAN = 0.5


def _palette(configs: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per configuration, so every figure uses the same colours; base is grey."""
    order = [c for c in CONFIG_ORDER if c != "base"] + sorted(set(configs) - set(CONFIG_ORDER))
    colours = sns.color_palette("colorblind", n_colors=10)
    picks = [colours[CONFIG_COLOURS[i % len(CONFIG_COLOURS)]] for i in range(len(order))]
    return {"base": (0.35, 0.35, 0.35)} | dict(zip(order, picks, strict=True))


def _hue_order(configs: Sequence[str]) -> list[str]:
    present = set(configs)
    return [c for c in CONFIG_ORDER if c in present] + sorted(present - set(CONFIG_ORDER))


def _markers(models: Sequence[str]) -> dict[str, str]:
    return {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(sorted(set(models)))}


def _save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


BETA_COL = "β"


def _with_beta_label(points: pd.DataFrame) -> pd.DataFrame:
    """Add a text β column ("base" for base models), so base points are not dropped as NaN sizes."""
    label = points["beta"].map(lambda b: "" if pd.isna(b) else f"{b:g}")
    return points.assign(**{BETA_COL: label.where(points["config"] != "base", "base")})


def _size_kws(points: pd.DataFrame) -> dict:
    """Marker size by β when there are several values, else one size."""
    betas = sorted(b for b in points["beta"].dropna().unique())
    labels = [f"{b:g}" for b in betas] + (["base"] if (points["config"] == "base").any() else [])
    if len(labels) < 2:
        return {"s": 70}
    sizes = dict(zip(labels, np.linspace(40, 120, len(labels)), strict=True))
    return {"size": BETA_COL, "sizes": sizes, "size_order": labels}


def fit_label(fit: Fit, caveats: Sequence[str] = (), name: str = "OLS fit") -> str:
    """The fit's legend entry; a fit that is not a result (``frontier.fit_caveats``) says so in it."""
    label = f"{name}: R² = {fit.r2:.3f}, r = {fit.r:.3f}, slope = {fit.slope:.3f}, n = {fit.n}"
    return label + "".join(f"\nNOT A RESULT: {note}" for note in caveats)


def frontier_plot(points: pd.DataFrame, fit: Fit, out_dir: Path, caveats: Sequence[str] = ()) -> list[Path]:
    """Safety-delta against helpfulness-delta of the fine-tuned points, with the OLS line and R²."""
    fp = _with_beta_label(points[(points["config"] != "base") & points["d_safety"].notna()])
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    sd_s, sd_h = _column(fp, "safety_std"), _column(fp, "helpfulness_std")
    ax.errorbar(fp["d_helpfulness"], fp["d_safety"], xerr=sd_h, yerr=sd_s, fmt="none", ecolor="0.55", lw=0.9,
                capsize=2, zorder=1)
    ax.scatter([0], [0], marker="*", s=220, color=_palette([])["base"], edgecolor="black", linewidth=0.5, zorder=3,
               label="base (every model's, at 0, 0)")
    sns.scatterplot(data=fp, x="d_helpfulness", y="d_safety", hue="config", style="model",
                    hue_order=_hue_order(fp["config"]), palette=_palette(fp["config"]),
                    markers=_markers(fp["model"]), edgecolor="black", linewidth=0.4, ax=ax, **_size_kws(fp))
    if np.isfinite(fit.slope):
        xs = np.linspace(fp["d_helpfulness"].min(), fp["d_helpfulness"].max(), 50)
        ax.plot(xs, fit.intercept + fit.slope * xs, color="black", lw=1.2, ls="--", label=fit_label(fit, caveats))
    largest = _span(ax, fp["d_helpfulness"], fp["d_safety"], sd_h, sd_s)
    ax.set_xlabel("Δ helpfulness vs base (0–3 scale)")
    ax.set_ylabel("Δ safety vs base (0–3 scale)")
    bars = "std over seeds" if np.isfinite(sd_s).any() else "none: one seed per point"
    ax.set_title("Safety–helpfulness frontier of fine-tuned runs"
                 + ("\n(too few points or a degenerate interval: the fit is not a result)" if caveats else "")
                 + f"\nlargest change {largest:.3f} of the 0–3 scale; error bars: {bars}", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    return _save(fig, out_dir, "frontier")


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=float) if name in frame else np.full(len(frame), np.nan)


def _span(ax: plt.Axes, x: pd.Series, y: pd.Series, xerr: np.ndarray, yerr: np.ndarray) -> float:
    """Each axis spans the base (0), every point and its error bar, and at least ``2 * MIN_HALF_SPAN``; returns the
    largest change of either score."""
    xs, ys = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
    largest = float(np.nanmax(np.abs(np.concatenate([xs, ys])))) if len(xs) else 0.0
    for values, err, set_lim in ((xs, xerr, ax.set_xlim), (ys, yerr, ax.set_ylim)):
        err = np.nan_to_num(err)
        lo, hi = float(np.nanmin([0.0, *(values - err)])), float(np.nanmax([0.0, *(values + err)]))
        pad = max(0.0, 2 * MIN_HALF_SPAN - (hi - lo)) / 2
        margin = 0.06 * (hi - lo + 2 * pad)
        set_lim(lo - pad - margin, hi + pad + margin)
    return largest


def raw_scores_plot(points: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Raw safety against helpfulness of every point, base models included."""
    points = _with_beta_label(points)
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    sns.scatterplot(data=points, x="helpfulness", y="safety", hue="config", style="model",
                    hue_order=_hue_order(points["config"]), palette=_palette(points["config"]),
                    markers=_markers(points["model"]), edgecolor="black", linewidth=0.4, ax=ax,
                    **_size_kws(points))
    ax.set_xlabel("helpfulness (0–3)")
    ax.set_ylabel("safety (0–3)")
    ax.set_title("Raw scores per (model, configuration, beta)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    return _save(fig, out_dir, "raw_scores")


def per_model_plot(points: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One panel per base model: raw scores with std over seeds as error bars, base marked."""
    points = _with_beta_label(points)
    models = sorted(points["model"].unique())
    ncol = min(3, len(models))
    nrow = -(-len(models) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.8 * nrow), squeeze=False, sharex=True,
                             sharey=True)
    palette = _palette(points["config"])
    hue_order = _hue_order(points["config"])
    style_order = ["base", *sorted((b for b in points[BETA_COL].unique() if b != "base"), key=float)]
    for ax, model in zip(axes.flat, models, strict=False):
        g = points[points["model"] == model]
        ax.errorbar(g["helpfulness"], g["safety"], xerr=g["helpfulness_std"].fillna(0),
                    yerr=g["safety_std"].fillna(0), fmt="none", ecolor="0.6", lw=0.8, zorder=1)
        sns.scatterplot(data=g, x="helpfulness", y="safety", hue="config", hue_order=hue_order,
                        palette=palette, style=BETA_COL, style_order=style_order, s=70, edgecolor="black",
                        linewidth=0.4, ax=ax, legend=ax is axes.flat[0], zorder=2)
        ax.set_title(model)
        ax.set_xlabel("helpfulness (0–3)")
        ax.set_ylabel("safety (0–3)")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    fig.suptitle("Per-model scores (error bars: std over seeds)")
    fig.tight_layout()
    if axes.flat[0].get_legend() is not None:
        sns.move_legend(axes.flat[0], "center left", bbox_to_anchor=(1.0, 0.5), bbox_transform=fig.transFigure,
                        frameon=False, fontsize=8)
    return _save(fig, out_dir, "per_model")


def _interval_table(terms: pd.DataFrame, intervals: pd.DataFrame | None) -> pd.DataFrame:
    return intervals if intervals is not None and not intervals.empty else point_intervals(terms, None)


def persistence_plot(terms: pd.DataFrame, out_dir: Path, intervals: pd.DataFrame | None = None) -> list[Path]:
    """Persist(S) and Persist(H) per beta and pooled over betas: bars at the mean of the (judge, model)
    terms, whiskers at the bootstrap interval, each term as a dot."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if terms.empty:
        ax.text(0.5, 0.5, "no persistence ratio could be computed", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out_dir, "persistence")
    table = _interval_table(terms, intervals)
    cats = list(dict.fromkeys(table["beta"]))
    xs = np.arange(len(cats))
    width = 0.38
    cb = sns.color_palette("colorblind", n_colors=10)
    colours = [cb[RATIO_COLOURS.get(name, 7)] for name in RATIOS]
    term_beta = terms["beta"].map(lambda b: f"{b:g}")
    rng = np.random.default_rng(0)
    for i, (name, colour) in enumerate(zip(RATIOS, colours, strict=True)):
        g = table[table["ratio"] == name].set_index("beta").reindex(cats)
        x = xs + (i - (len(RATIOS) - 1) / 2) * width
        v = g["value"].to_numpy(dtype=float)
        drawn = np.isfinite(v).any()  # an undefined ratio draws no bar: the legend says so, not a lone swatch
        ax.bar(x, g["value"], width * 0.95, color=colour, alpha=0.75,
               label=f"Persist({name})" if drawn else f"Persist({name}): undefined, no bar")
        lo, hi = g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float)
        ax.errorbar(x, v, yerr=np.vstack([v - lo, hi - v]), fmt="none", ecolor="black", elinewidth=1, capsize=4)
        top = np.fmax(np.nan_to_num(hi, nan=-np.inf), np.fmax(np.nan_to_num(v, nan=0.0), 0))  # above the whisker
        for xi, yi, val in zip(x, top, v, strict=True):
            ax.annotate(_fmt_value(val), (xi, yi), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7.5, zorder=5,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
        own = terms["ratio"] == name
        for j, cat in enumerate(cats):
            vals = terms.loc[own & ((term_beta == cat) | (cat == POOLED)), "value"].to_numpy()
            ax.scatter(x[j] + rng.uniform(-0.08, 0.08, len(vals)), vals, s=9, color="0.15", zorder=3)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.axhline(1, color="0.5", lw=0.8, ls=":")
    ax.set_xticks(xs, [c if c == POOLED else f"β = {c}" for c in cats])
    ax.set_ylabel("persistence (1 = first stage fully kept)")
    ax.set_title("Persistence: mean over (judge, model) terms (dots), bootstrap CI", fontsize=9)
    ax.legend(title=None, frameon=False)
    return _save(fig, out_dir, "persistence")


def _fmt_value(v: float) -> str:
    return "undefined" if not np.isfinite(v) else f"{v:.3f}"


def _point_residuals(points: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Each fitted point's vertical distance from the line fitted without its configuration."""
    fp = points[(points["config"] != "base") & points["d_safety"].notna() & points["d_helpfulness"].notna()]
    lines = table.set_index("config")[["slope", "intercept"]]
    fp = fp[fp["config"].isin(lines.index)]
    slope, intercept = fp["config"].map(lines["slope"]), fp["config"].map(lines["intercept"])
    return fp.assign(residual=fp["d_safety"] - (slope * fp["d_helpfulness"] + intercept))


def residuals_plot(points: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One row per configuration: its mean distance from the line of the others with its interval
    (filled: the interval excludes zero), each of its points as a small dot."""
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.55 * max(len(table), 1)))
    if table.empty:
        ax.text(0.5, 0.5, "no fine-tuned point with a base model", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out_dir, "residuals")
    palette = _palette(table["config"])
    ys = np.arange(len(table))[::-1]
    per_point = _point_residuals(points, table)
    for y, r in zip(ys, table.itertuples(index=False), strict=True):
        colour = palette.get(r.config, (0.3, 0.3, 0.3))
        pts = per_point.loc[per_point["config"] == r.config, "residual"].to_numpy()
        ax.scatter(pts, np.full(len(pts), y) + np.linspace(-0.18, 0.18, len(pts)), s=10, color=colour, alpha=0.45,
                   zorder=2)
        if np.isfinite(r.ci_low) and np.isfinite(r.ci_high):
            ax.hlines(y, r.ci_low, r.ci_high, color=colour, lw=2.2, zorder=3)
        ax.scatter([r.residual], [y], s=70, zorder=4, edgecolor="black", linewidth=0.8,
                   color=colour if r.off_frontier else "white")
        ax.annotate(f"{r.residual:+.3f}" + (" off" if r.off_frontier else ""), (1.01, y),
                    xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.9, ls="--")
    ax.set_yticks(ys, table["config"].tolist())
    ax.set_ylim(ys.min() - 0.6, ys.max() + 0.6)
    ax.set_xlabel("Δsafety minus the line of the other configurations (safety points)")
    ax.set_title("Distance from the frontier, leave-one-configuration-out\n"
                 "(bar: bootstrap CI over cases and seeds; filled: CI excludes 0; dots: points)", fontsize=9)
    return _save(fig, out_dir, "residuals")


def make_figures(points: pd.DataFrame, fit: Fit, terms: pd.DataFrame, out_dir: Path, *,
                 residual_table: pd.DataFrame | None = None,
                 persistence_ci: pd.DataFrame | None = None, caveats: Sequence[str] = ()) -> list[Path]:
    """Write every figure into ``out_dir``; returns the paths written. ``caveats``: why the fit is not a result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Context managers rather than sns.set_theme: no global style is left changed.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        paths = []
        if ((points["config"] != "base") & points["d_safety"].notna()).any():
            paths += frontier_plot(points, fit, out_dir, caveats)
        paths += raw_scores_plot(points, out_dir) + per_model_plot(points, out_dir)
        paths += persistence_plot(terms, out_dir, persistence_ci)
        if residual_table is not None:
            paths += residuals_plot(points, residual_table, out_dir)
    return paths


def compare_plot(sets: Mapping[str, tuple[pd.DataFrame, Fit, pd.DataFrame]], out_dir: Path) -> list[Path]:
    """Result sets side by side: left, every set's fine-tuned points and OLS line on shared axes (colour:
    set, marker: configuration); right, each configuration's distance from the line of the others, per
    set, with its interval (filled: the interval excludes zero)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 5.0), gridspec_kw={"width_ratios": [1.25, 1]})
        colours = dict(zip(sets, sns.color_palette("dark", n_colors=len(sets)), strict=True))
        configs = _hue_order(pd.concat([p["config"] for p, _, _ in sets.values()]).loc[lambda c: c != "base"])
        markers = {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(configs)}
        for name, (points, fit, _) in sets.items():
            fp = points[(points["config"] != "base") & points["d_safety"].notna()]
            for config, g in fp.groupby("config", sort=False):
                left.scatter(g["d_helpfulness"], g["d_safety"], marker=markers[config], s=42, alpha=0.8,
                             color=colours[name], edgecolor="black", linewidth=0.3)
            if np.isfinite(fit.slope) and len(fp):
                xs = np.linspace(fp["d_helpfulness"].min(), fp["d_helpfulness"].max(), 50)
                left.plot(xs, fit.intercept + fit.slope * xs, color=colours[name], lw=1.4, ls="--",
                          label=fit_label(fit, fit_caveats(fit), name))
        for config in configs:
            left.scatter([], [], marker=markers[config], color="0.6", edgecolor="black", linewidth=0.3, label=config)
        left.axhline(0, color="0.8", lw=0.8, zorder=0)
        left.axvline(0, color="0.8", lw=0.8, zorder=0)
        left.set_xlabel("Δ helpfulness vs base (0–3 scale)")
        left.set_ylabel("Δ safety vs base (0–3 scale)")
        left.set_title("Frontiers (colour: result set; marker: configuration)")
        left.legend(frameon=False, fontsize=7, loc="best")
        _compare_residuals(right, {n: t for n, (_, _, t) in sets.items()}, configs, colours)
        fig.tight_layout()
        return _save(fig, out_dir, "compare")


def _compare_residuals(ax: plt.Axes, tables: Mapping[str, pd.DataFrame], configs: Sequence[str],
                       colours: Mapping[str, tuple[float, float, float]]) -> None:
    ys = np.arange(len(configs))[::-1].astype(float)
    step = 0.6 / max(len(tables), 1)
    for i, (name, table) in enumerate(tables.items()):
        t = table.set_index("config")
        off = (i - (len(tables) - 1) / 2) * step
        for y, config in zip(ys, configs, strict=True):
            if config not in t.index:
                continue
            r = t.loc[config]
            if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
                ax.hlines(y - off, r["ci_low"], r["ci_high"], color=colours[name], lw=2)
            ax.scatter([r["residual"]], [y - off], s=55, edgecolor=colours[name], linewidth=1.2, zorder=3,
                       color=colours[name] if r["off_frontier"] else "white")
        ax.scatter([], [], s=55, color=colours[name], label=name)
    ax.axvline(0, color="black", lw=0.9, ls="--")
    ax.set_yticks(ys, list(configs))
    ax.set_xlabel("Δsafety minus the line of the other configurations")
    ax.set_title("Distance from the frontier (filled: CI excludes 0)")
    ax.legend(frameon=True, fontsize=8, loc="lower left")
