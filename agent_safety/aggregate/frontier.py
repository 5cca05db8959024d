"""The study's frontier recipe, as pure functions on the tidy run table.

1. Each (base model, configuration, beta) is one point: its scores averaged over seeds and judges
   (first within each (judge, seed) cell, then over the cells).
2. The base model's scores, averaged the same way (over all its stage-0 records, whatever their beta),
   are subtracted to give deltas.
3. Safety-delta is fitted on helpfulness-delta by OLS over the fine-tuned points (base excluded).
4. A seeded bootstrap that resamples test cases gives a confidence interval for R².
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

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


def bootstrap_r2(table: pd.DataFrame, cases: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, object]:
    """Percentile CI for R² from resampling test cases with replacement (seeded).

    Each replicate draws the case universe (every (data, case) seen) with replacement; a record's score
    becomes the count-weighted mean of its cases' scores, and the whole recipe (cell means, point means,
    deltas, OLS) is rerun. Records without per-case scores keep their reported score. Records that share
    point, judge, seed and case set are pooled case by case first, which is exact and keeps this fast.
    """
    empty = {"r2_ci": [None, None], "n_boot": int(n_boot), "n_valid": 0, "seed": seed, "level": level}
    if n_boot <= 0 or table.empty:
        return empty
    t = _point_frame(table)
    t["case_set"] = table["case_set"].to_numpy()
    point_id, point_index = pd.MultiIndex.from_frame(t[list(POINT_KEYS)]).factorize()
    t["point"] = point_id
    cell_id = t.groupby(["point", "judge", "seed"], sort=False).ngroup().to_numpy()
    cell_size = np.bincount(cell_id)
    cells_per_point = pd.Series(point_id).groupby(cell_id).first().value_counts().reindex(
        range(len(point_index)), fill_value=0).to_numpy()
    row_w = 1.0 / (cell_size[cell_id] * cells_per_point[point_id])
    has_cases = np.zeros(len(t), dtype=bool)
    if len(cases):
        has_cases[cases["row"].to_numpy()] = True
    # Groups: rows with cases pool by (point, cell, case set); a row without cases is its own group.
    gkey = np.where(has_cases, t["case_set"].to_numpy(), -1 - np.arange(len(t)))
    group_id = pd.MultiIndex.from_arrays([cell_id, gkey]).factorize()[0]
    n_groups = group_id.max() + 1
    group_w = np.bincount(group_id, weights=row_w, minlength=n_groups)
    group_point = np.zeros(n_groups, dtype=np.int64)
    group_point[group_id] = point_id
    group_rows = np.bincount(group_id, minlength=n_groups).astype(float)
    fixed = {m: np.bincount(group_id, weights=t[m].to_numpy(), minlength=n_groups) / group_rows
             for m in METRICS}
    rng = np.random.default_rng(seed)
    if len(cases):
        crow = cases["row"].to_numpy()
        data_code = pd.factorize(table["data"])[0] if "data" in table else np.zeros(len(table), np.int64)
        case = cases["case"].to_numpy()
        span = int(case.max() - case.min()) + 1
        _, cidx = np.unique(data_code[crow] * span + (case - case.min()), return_inverse=True)
        n_univ = int(cidx.max()) + 1
        flat = group_id[crow] * n_univ + cidx
        size = n_groups * n_univ
        sums = {m: np.bincount(flat, weights=cases[m].to_numpy(), minlength=size).reshape(n_groups, n_univ)
                for m in METRICS}
        counts = np.bincount(flat, minlength=size).reshape(n_groups, n_univ).astype(float)
        draws = rng.multinomial(n_univ, np.full(n_univ, 1.0 / n_univ), size=n_boot).T.astype(float)
        denom = counts @ draws  # groups x replicates
        with np.errstate(invalid="ignore", divide="ignore"):
            values = {m: (sums[m] @ draws) / denom for m in METRICS}
        case_groups = counts.sum(axis=1) > 0
        for m in METRICS:
            values[m][~case_groups] = fixed[m][~case_groups, None]
    else:
        values = {m: np.repeat(fixed[m][:, None], n_boot, axis=1) for m in METRICS}
    n_points = len(point_index)
    to_points = np.zeros((n_points, n_groups))  # point value = weighted sum of its groups' values
    to_points[group_point, np.arange(n_groups)] = group_w
    pv = {m: to_points @ values[m] for m in METRICS}
    pts = point_index.to_frame(index=False, name=list(POINT_KEYS))
    is_base = (pts["config"] == "base").to_numpy()
    base_of = pd.Series(np.flatnonzero(is_base), index=pts.loc[is_base, "model"].to_numpy())
    base_idx = pts["model"].map(base_of)
    use = (pts["config"] != "base") & base_idx.notna()
    if use.sum() < 2:
        return empty
    sel = np.flatnonzero(use.to_numpy())
    bsel = base_idx[use].astype(int).to_numpy()
    dx = (pv["helpfulness"][sel] - pv["helpfulness"][bsel]).T
    dy = (pv["safety"][sel] - pv["safety"][bsel]).T
    r2 = _r2_rows(dx, dy)
    ok = np.isfinite(r2)
    if not ok.any():
        return empty | {"n_valid": 0}
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(r2[ok], [alpha, 1.0 - alpha])
    return {"r2_ci": [float(lo), float(hi)], "n_boot": int(n_boot), "n_valid": int(ok.sum()), "seed": seed,
            "level": level}
