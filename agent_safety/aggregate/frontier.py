"""The study's frontier recipe, as pure functions on the tidy run table.

1. Each (base model, configuration, beta) is one point: its scores averaged over seeds and judges
   (first within each (judge, seed) cell, then over the cells).
2. The base model's scores, averaged the same way (over all its stage-0 records, whatever their beta),
   are subtracted to give deltas.
3. Safety-delta is fitted on helpfulness-delta by OLS over the fine-tuned points (base excluded).
4. A seeded bootstrap that resamples test cases gives a confidence interval for R² (and, resampling
   seeds too, the wider interval that also counts the spread between training runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from agent_safety.aggregate.resample import (
    Draws,
    Totals,
    group_totals,
    make_draws,
    percentile_ci,
    seed_weights,
    weighted_unit_mean,
)

POINT_KEYS: tuple[str, ...] = ("model", "config", "beta")
#: Display order of the configurations; others follow alphabetically.
CONFIG_ORDER: tuple[str, ...] = ("base", "S", "H", "S&H", "S→H", "H→S")
METRICS: tuple[str, str] = ("safety", "helpfulness")


@dataclass(frozen=True)
class Fit:
    """An OLS fit of y on x."""

    slope: float
    intercept: float
    r: float
    r2: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in asdict(self).items()}


#: Fewer points than this and an R² says nothing: a line through 2 points fits exactly (R² = 1 whatever they
#: are), and through 3 it has one degree of freedom left. Such a fit is reported flagged, never as a result.
MIN_FIT_POINTS = 4


def fit_caveats(fit: Fit, r2_ci: Sequence[float | None] = (None, None)) -> list[str]:
    """Why the fit, or its interval, is not a result (empty when it is): too few points, a degenerate interval."""
    notes = []
    if fit.n < MIN_FIT_POINTS:
        notes.append(f"only n = {fit.n} fitted point{'s' if fit.n != 1 else ''} (fewer than {MIN_FIT_POINTS}): "
                     "the R² is not meaningful")
    lo, hi = (list(r2_ci) + [None, None])[:2]
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi) and np.isclose(lo, hi):
        notes.append(f"the R² interval [{lo:.3f}, {hi:.3f}] is degenerate: every resample gives the same R²")
    return notes


def config_sort_key(configs: pd.Series) -> pd.Series:
    """Sort key that puts the study's configurations first, in the paper's order."""
    rank = {c: i for i, c in enumerate(CONFIG_ORDER)}
    return configs.map(lambda c: (rank.get(c, len(rank)), c))


def _point_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with base rows' beta cleared: the base model does not depend on the run's beta."""
    t = table[["model", "config", "beta", "judge", "seed", *METRICS]].copy()
    t["beta"] = t["beta"].where(t["config"] != "base")
    return t


def point_means(table: pd.DataFrame) -> pd.DataFrame:
    """Average each (model, configuration, beta) over seeds and judges; std is over the per-seed means."""
    t = _point_frame(table)
    cells = t.groupby([*POINT_KEYS, "judge", "seed"], dropna=False, sort=False)[list(METRICS)]
    cell = cells.mean()
    cell["n_records"] = cells.size()
    grouped = cell.groupby(level=list(POINT_KEYS), dropna=False, sort=False)
    points = grouped[list(METRICS)].mean()
    points["n_records"] = grouped["n_records"].sum()
    points["n_cells"] = grouped.size()
    per_seed = cell.groupby(level=[*POINT_KEYS, "seed"], dropna=False, sort=False)[list(METRICS)].mean()
    seed_groups = per_seed.groupby(level=list(POINT_KEYS), dropna=False, sort=False)
    std = seed_groups.std(ddof=1)
    points["safety_std"] = std["safety"]
    points["helpfulness_std"] = std["helpfulness"]
    points["n_seeds"] = seed_groups.size()
    points["n_judges"] = t.groupby(list(POINT_KEYS), dropna=False, sort=False)["judge"].nunique()
    points = points.reset_index()
    return sort_points(points)


def sort_points(points: pd.DataFrame) -> pd.DataFrame:
    """Order by model, then the study's configuration order, then beta (base first)."""
    def key(col: pd.Series) -> pd.Series:
        return config_sort_key(col) if col.name == "config" else col

    out = points.sort_values(["model", "config", "beta"], key=key, na_position="first")
    return out.reset_index(drop=True)


def add_deltas(points: pd.DataFrame) -> pd.DataFrame:
    """Add d_safety and d_helpfulness: each point minus its model's base point (NaN when no base)."""
    base = points[points["config"] == "base"].set_index("model")[list(METRICS)]
    out = points.copy()
    for m in METRICS:
        out[f"d_{m}"] = out[m] - out["model"].map(base[m])
    return out


def ols(x: np.ndarray, y: np.ndarray) -> Fit:
    """OLS of y on x with Pearson r; NaN fields when fewer than two distinct x values."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return Fit(np.nan, np.nan, np.nan, np.nan, n)
    xc, yc = x - x.mean(), y - y.mean()
    sxx, sxy, syy = xc @ xc, xc @ yc, yc @ yc
    slope = sxy / sxx
    r = sxy / np.sqrt(sxx * syy) if syy > 0 else np.nan
    return Fit(float(slope), float(y.mean() - slope * x.mean()), float(r), float(r * r), n)


def fit_points(points: pd.DataFrame) -> Fit:
    """Fit safety-delta on helpfulness-delta over the fine-tuned points that have a base."""
    fp = fitted_points(points)
    return ols(fp["d_helpfulness"].to_numpy(), fp["d_safety"].to_numpy())


def fitted_points(points: pd.DataFrame) -> pd.DataFrame:
    """The points that enter the fit: fine-tuned (not base), with deltas."""
    return points[(points["config"] != "base") & points["d_safety"].notna() & points["d_helpfulness"].notna()]


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good on both axes and better on one (both maximised)."""
    x = np.asarray(x, dtype=float)[:, None]
    y = np.asarray(y, dtype=float)[:, None]
    dominated = ((x.T >= x) & (y.T >= y) & ((x.T > x) | (y.T > y))).any(axis=1)
    return ~dominated


def add_pareto(points: pd.DataFrame) -> pd.DataFrame:
    """Flag Pareto-optimal points: over all fine-tuned deltas, and within each model on raw scores."""
    out = points.copy()
    out["pareto"] = False
    fp = fitted_points(out)
    if len(fp):
        out.loc[fp.index, "pareto"] = pareto_mask(fp["d_helpfulness"].to_numpy(), fp["d_safety"].to_numpy())
    out["pareto_in_model"] = False
    for _, g in out.groupby("model"):
        out.loc[g.index, "pareto_in_model"] = pareto_mask(g["helpfulness"].to_numpy(), g["safety"].to_numpy())
    return out


# ------------------------------------------------------------------------------------------ bootstrap


def _r2_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² of each row's OLS fit (rows are replicates, columns points); NaN where undefined."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    sxy = (xc * yc).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy**2 / ((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))


@dataclass(frozen=True)
class CellTotals:
    """Replicate totals of every (model, configuration, beta, judge, seed) cell: the unit that both the
    frontier's points and persistence's pooled means are built from, so one set of totals serves all."""

    cells: pd.DataFrame
    """The keys of each cell (row i: cell i); beta is NaN for base cells, as in ``point_means``."""
    totals: Totals
    draws: Draws


def cell_totals(table: pd.DataFrame, cases: pd.DataFrame, draws: Draws) -> CellTotals:
    """Group the records by cell and case set and total them under the draws. A record without per-case
    scores weighs as its case count (as in persistence's pooling; a cell mean is unaffected)."""
    t = _point_frame(table)
    cell_id, cells = pd.MultiIndex.from_frame(t[[*POINT_KEYS, "judge", "seed"]]).factorize()
    n_cases = table["n_cases"].to_numpy(dtype=float)
    totals = group_totals(table, cases, draws, cell_id, np.where(n_cases > 0, n_cases, 1.0))
    return CellTotals(cells.to_frame(index=False, name=[*POINT_KEYS, "judge", "seed"]), totals, draws)


@dataclass(frozen=True)
class DeltaReplicates:
    """The fitted points (fine-tuned, with a base; columns model, config, beta) and their Δhelpfulness
    (``dx``) and Δsafety (``dy``) in each replicate, as (replicates, points) arrays: resampling cases only
    (key False) and cases and seeds (key True)."""

    points: pd.DataFrame
    dx: dict[bool, np.ndarray]
    dy: dict[bool, np.ndarray]


def replicate_deltas(ct: CellTotals) -> DeltaReplicates:
    """Rerun the recipe of ``point_means`` and ``add_deltas`` in every replicate: record scores reweighted by
    the case draws, cell means over records, the point as the mean over its (judge, seed) cells (each
    weighted by its seed's draw count when seeds are resampled), minus the model's base point in the same
    replicate."""
    tot = ct.totals
    point_of_cell, point_index = pd.MultiIndex.from_frame(ct.cells[list(POINT_KEYS)]).factorize()
    cell_rows = np.bincount(tot.unit, weights=tot.rows, minlength=len(ct.cells))
    a = (tot.rows / cell_rows[tot.unit])[:, None]  # a group's share of its cell's records
    group_point = point_of_cell[tot.unit]
    with np.errstate(invalid="ignore", divide="ignore"):
        num = {m: a * (tot.sums[m] / tot.counts) for m in METRICS}
    den = np.broadcast_to(a, num["safety"].shape)
    pts = point_index.to_frame(index=False, name=list(POINT_KEYS))
    is_base = (pts["config"] == "base").to_numpy()
    base_of = pd.Series(np.flatnonzero(is_base), index=pts.loc[is_base, "model"].to_numpy())
    base_idx = pts["model"].map(base_of)
    use = ((pts["config"] != "base") & base_idx.notna()).to_numpy()
    sel, bsel = np.flatnonzero(use), base_idx[use].astype(int).to_numpy()
    dx, dy = {}, {}
    for seeds in (False, True):
        sw = seed_weights(tot, ct.draws, seeds)
        pv = {m: weighted_unit_mean(num[m], den, group_point, len(point_index), sw) for m in METRICS}
        dx[seeds] = (pv["helpfulness"][sel] - pv["helpfulness"][bsel]).T
        dy[seeds] = (pv["safety"][sel] - pv["safety"][bsel]).T
    return DeltaReplicates(pts.iloc[sel].reset_index(drop=True), dx, dy)


def bootstrap_r2(table: pd.DataFrame, cases: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, replicates: DeltaReplicates | None = None) -> dict[str, object]:
    """Percentile CI for R² from resampling test cases with replacement (seeded), as the study did.

    Each replicate draws the case universe (every (data, case) seen) with replacement; a record's score
    becomes the count-weighted mean of its cases' scores, and the whole recipe (cell means, point means,
    deltas, OLS) is rerun. Records without per-case scores keep their reported score. ``r2_ci_seeds`` is
    the same interval when the seeds are resampled too (see ``resample``): wider, as it also counts the
    spread between training runs.
    """
    empty = {"r2_ci": [None, None], "r2_ci_seeds": [None, None], "n_boot": int(n_boot), "n_valid": 0,
             "seed": seed, "level": level}
    if n_boot <= 0 or table.empty:
        return empty
    rep = replicates or replicate_deltas(cell_totals(table, cases, make_draws(table, cases, n_boot, seed)))
    if len(rep.points) < 2:
        return empty
    r2_ci, n_valid = percentile_ci(_r2_rows(rep.dx[False], rep.dy[False]), level)
    r2_ci_seeds, _ = percentile_ci(_r2_rows(rep.dx[True], rep.dy[True]), level)
    return empty | {"r2_ci": r2_ci, "r2_ci_seeds": r2_ci_seeds, "n_valid": n_valid}
