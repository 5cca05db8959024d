"""Seaborn figures of the frontier, written as PNG and PDF (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from agent_safety.aggregate.frontier import CONFIG_ORDER, Fit  # noqa: E402

FORMATS: tuple[str, ...] = ("png", "pdf")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")


def _palette(configs: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per configuration, so every figure uses the same colours; base is grey."""
    order = [c for c in CONFIG_ORDER if c != "base"] + sorted(set(configs) - set(CONFIG_ORDER))
    colours = sns.color_palette("colorblind", n_colors=max(len(order), 1))
    return {"base": (0.35, 0.35, 0.35)} | dict(zip(order, colours, strict=False))


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


def frontier_plot(points: pd.DataFrame, fit: Fit, out_dir: Path) -> list[Path]:
    """Safety-delta against helpfulness-delta of the fine-tuned points, with the OLS line and R²."""
    fp = _with_beta_label(points[(points["config"] != "base") & points["d_safety"].notna()])
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    sns.scatterplot(data=fp, x="d_helpfulness", y="d_safety", hue="config", style="model",
                    hue_order=_hue_order(fp["config"]), palette=_palette(fp["config"]),
                    markers=_markers(fp["model"]), edgecolor="black", linewidth=0.4, ax=ax, **_size_kws(fp))
    if np.isfinite(fit.slope):
        xs = np.linspace(fp["d_helpfulness"].min(), fp["d_helpfulness"].max(), 50)
        ax.plot(xs, fit.intercept + fit.slope * xs, color="black", lw=1.2, ls="--",
                label=f"OLS fit: R² = {fit.r2:.3f}, r = {fit.r:.3f}, n = {fit.n}")
    ax.set_xlabel("Δ helpfulness vs base (0–3 scale)")
    ax.set_ylabel("Δ safety vs base (0–3 scale)")
    ax.set_title("Safety–helpfulness frontier of fine-tuned runs")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    return _save(fig, out_dir, "frontier")


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


def persistence_plot(terms: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Mean Persist(S) and Persist(H) per beta, with each (judge, model) term as a dot."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    if terms.empty:
        ax.text(0.5, 0.5, "no persistence ratio could be computed", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out_dir, "persistence")
    t = terms.assign(ratio=terms["ratio"].map(lambda r: f"Persist({r})"),
                     beta=terms["beta"].map(lambda b: f"β = {b:g}"))
    order = sorted(t["beta"].unique(), key=lambda s: float(s.split("=")[1]))
    sns.barplot(data=t, x="beta", y="value", hue="ratio", order=order, errorbar=None, alpha=0.75, ax=ax)
    sns.stripplot(data=t, x="beta", y="value", hue="ratio", order=order, dodge=True,
                  palette=["0.15"] * t["ratio"].nunique(), size=3, legend=False, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=8, padding=3,
                     bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    ax.axhline(0, color="0.5", lw=0.8)
    ax.axhline(1, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("")
    ax.set_ylabel("persistence (1 = first stage fully kept)")
    ax.set_title("Persistence, averaged over (judge, model); dots: single terms")
    ax.legend(title=None, frameon=False)
    return _save(fig, out_dir, "persistence")


def make_figures(points: pd.DataFrame, fit: Fit, terms: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write every figure into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Context managers rather than sns.set_theme: no global style is left changed.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        paths = []
        if ((points["config"] != "base") & points["d_safety"].notna()).any():
            paths += frontier_plot(points, fit, out_dir)
        paths += raw_scores_plot(points, out_dir) + per_model_plot(points, out_dir)
        paths += persistence_plot(terms, out_dir)
    return paths
