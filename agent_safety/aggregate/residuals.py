"""How far each configuration lies from the frontier that the other configurations trace.

The study's third claim is that training on both objectives at once "simply results in another point on
the frontier". For each configuration (S, H, S&H, S→H, H→S, any other schedule) the line is fitted
without it (leave-one-configuration-out: every other configuration's points, all models and betas), and
its **residual** is the mean over its own points of the *vertical* distance

    Δsafety − (slope · Δhelpfulness + intercept)

in safety points (0–3 scale): positive = safer than the other configurations' trade-off predicts at that
helpfulness (beyond the frontier), negative = inside it. Vertical rather than perpendicular because it
reads in the units of the scores; the perpendicular distance is the vertical one times
cos(atan(slope)), so its sign and which intervals exclude zero are the same.

The interval is the percentile interval of the same quantity over the bootstrap replicates that resample
test cases and seeds (``resample``): each replicate refits the line without the configuration. A
configuration whose interval excludes zero is flagged: its points sit off the line the others trace.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agent_safety.aggregate.frontier import DeltaReplicates, config_sort_key, fitted_points
from agent_safety.aggregate.resample import percentile_ci

COLUMNS: tuple[str, ...] = ("config", "residual", "ci_low", "ci_high", "off_frontier", "n_points", "n_valid",
                            "slope", "intercept", "n_fit")


def loco_residuals(dx: np.ndarray, dy: np.ndarray, configs: np.ndarray, config: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residual of ``config`` from the OLS line of the other points, per replicate (rows of ``dx``/``dy``,
    columns are points labelled by ``configs``). Returns (residual, slope, intercept), NaN where the other
    points have fewer than two distinct Δhelpfulness values."""
    own = np.asarray(configs) == config
    x, y = dx[:, ~own], dy[:, ~own]
    nan = np.full(dx.shape[0], np.nan)
    if x.shape[1] < 2 or not own.any():
        return nan, nan, nan
    xm, ym = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 0, ((x - xm) * (y - ym)).sum(axis=1) / sxx, np.nan)
    intercept = ym[:, 0] - slope * xm[:, 0]
    resid = (dy[:, own] - slope[:, None] * dx[:, own] - intercept[:, None]).mean(axis=1)
    return resid, slope, intercept


def ordered_configs(configs: pd.Series) -> list[str]:
    """The distinct configurations, in the study's order, others alphabetically."""
    uniq = pd.Series(pd.unique(configs))
    return uniq.iloc[np.argsort(config_sort_key(uniq).to_numpy(), kind="stable")].tolist()


def residual_table(points: pd.DataFrame, replicates: DeltaReplicates | None, level: float = 0.95
                   ) -> pd.DataFrame:
    """One row per fine-tuned configuration: its residual from the leave-it-out line (point estimate on
    ``points``, the output of ``add_deltas``), the percentile interval over the replicates that resample
    cases and seeds (NaN without replicates), whether that interval excludes zero, its number of points,
    of valid replicates, and the leave-it-out line itself."""
    fp = fitted_points(points)
    if fp.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    configs = fp["config"].to_numpy()
    dx, dy = fp["d_helpfulness"].to_numpy()[None, :], fp["d_safety"].to_numpy()[None, :]
    rows = []
    for config in ordered_configs(fp["config"]):
        resid, slope, intercept = loco_residuals(dx, dy, configs, config)
        ci, n_valid = [None, None], 0
        if replicates is not None and len(replicates.points):
            boot, _, _ = loco_residuals(replicates.dx[True], replicates.dy[True],
                                        replicates.points["config"].to_numpy(), config)
            ci, n_valid = percentile_ci(boot, level)
        lo, hi = (np.nan if v is None else v for v in ci)
        rows.append({"config": config, "residual": float(resid[0]), "ci_low": lo, "ci_high": hi,
                     "off_frontier": bool(lo > 0 or hi < 0), "n_points": int((configs == config).sum()),
                     "n_valid": n_valid, "slope": float(slope[0]), "intercept": float(intercept[0]),
                     "n_fit": int((configs != config).sum())})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def to_json(table: pd.DataFrame) -> list[dict[str, object]]:
    """The residual table as ``frontier.json`` carries it (the interval as a [low, high] pair)."""
    out = []
    for r in table.to_dict(orient="records"):
        ci = [r.pop("ci_low"), r.pop("ci_high")]
        out.append(r | {"ci": [None if pd.isna(v) else float(v) for v in ci]})
    return out
