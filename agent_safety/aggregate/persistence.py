"""How much of the first training stage survives the second.

Persist(S) = (Safety(S→H) − Safety(H)) / (Safety(S) − Safety(H)): 1 when safety training fully survives
later helpfulness training, 0 when S→H is no safer than H alone. Persist(H) mirrors it for helpfulness.
Each term is computed per (judge, base model, beta), pooling all (seed, test case) scores of each
configuration, and the terms are then averaged per beta, and over every beta ("pooled").

Intervals: the percentile interval of those averages over the bootstrap replicates that resample test
cases and seeds (``resample``), each replicate recomputing every pooled mean and term. A replicate in
which some term's denominator falls to ``EPS`` or below has no value for that average and is not counted
(``n_valid`` says how many were).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from agent_safety.aggregate.resample import percentile_ci, seed_weights, weighted_unit_mean
from agent_safety.records.schema import Skip

if TYPE_CHECKING:
    from agent_safety.aggregate.frontier import CellTotals

EPS = 1e-9
#: name -> (metric, sequential config, other-only config, own-only config).
RATIOS: Mapping[str, tuple[str, str, str, str]] = MappingProxyType({
    "S": ("safety", "S→H", "H", "S"),
    "H": ("helpfulness", "H→S", "S", "H"),
})
KEYS: tuple[str, ...] = ("judge", "model", "beta")
#: The label of the average over every beta.
POOLED = "pooled"
INTERVAL_COLUMNS: tuple[str, ...] = ("beta", "ratio", "value", "ci_low", "ci_high", "n_terms", "n_valid")


def pooled_means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (judge, model, beta, config), pooling every (seed, test case) score.

    A record's mean stands for its ``n_cases`` case scores, so this equals the mean over all pooled
    cases; records without a case count weigh as one case.
    """
    t = table[table["config"] != "base"]
    w = t["n_cases"].where(t["n_cases"] > 0, 1).astype(float)
    weighted = t[["safety", "helpfulness"]].mul(w, axis=0)
    weighted[[*KEYS, "config"]] = t[[*KEYS, "config"]]
    weighted["w"] = w
    sums = weighted.groupby([*KEYS, "config"], sort=True)[["safety", "helpfulness", "w"]].sum()
    return sums[["safety", "helpfulness"]].div(sums["w"], axis=0)


def persistence_terms(table: pd.DataFrame, eps: float = EPS) -> tuple[pd.DataFrame, list[Skip]]:
    """One row per (judge, model, beta, ratio) that could be computed, plus the skipped ones with reasons."""
    means = pooled_means(table)
    rows: list[dict] = []
    skipped: list[Skip] = []
    for key, g in means.groupby(level=list(KEYS), sort=True):
        by_cfg = g.droplevel(list(KEYS))
        where = "persistence judge={} model={} beta={:g}".format(*key)
        for name, (metric, seq, other, own) in RATIOS.items():
            missing = [c for c in (seq, other, own) if c not in by_cfg.index]
            if missing:
                skipped.append(Skip(f"{where} Persist({name})", f"missing configuration(s) {missing}"))
                continue
            num = by_cfg.at[seq, metric] - by_cfg.at[other, metric]
            den = by_cfg.at[own, metric] - by_cfg.at[other, metric]
            if den <= eps:
                reason = f"denominator {metric}({own}) - {metric}({other}) = {den:.3g} <= {eps:g}"
                skipped.append(Skip(f"{where} Persist({name})", reason))
                continue
            rows.append(dict(zip(KEYS, key, strict=True)) | {"ratio": name, "value": num / den,
                                                               "numerator": num, "denominator": den})
    cols = [*KEYS, "ratio", "value", "numerator", "denominator"]
    return pd.DataFrame(rows, columns=cols), skipped


def summarize(terms: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Average the terms per beta: {"0.1": {"S": ..., "H": ...}}; None where no term was computable."""
    out: dict[str, dict[str, float | None]] = {}
    for beta, g in terms.groupby("beta", sort=True):
        means = g.groupby("ratio")["value"].mean()
        out[f"{beta:g}"] = {name: (float(means[name]) if name in means and np.isfinite(means[name]) else None)
                            for name in RATIOS}
    return out


def summary_table(terms: pd.DataFrame) -> pd.DataFrame:
    """Per beta and ratio: the mean, its number of terms and their spread (for tables and figures)."""
    if terms.empty:
        return pd.DataFrame(columns=["beta", "ratio", "mean", "std", "n"])
    g = terms.groupby(["beta", "ratio"])["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.size()}).reset_index()
    order = {name: i for i, name in enumerate(RATIOS)}
    return out.sort_values(["beta", "ratio"], key=lambda c: c.map(order) if c.name == "ratio" else c,
                           ignore_index=True)


def replicate_pooled_means(ct: CellTotals) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """``pooled_means`` in every replicate that resamples cases and seeds: per (judge, model, beta, config),
    Σ over its records and drawn cases of the scores / Σ of the case counts, each seed's records weighted
    by its draw count. Returns the units (columns judge, model, beta, config) and metric -> (units,
    replicates)."""
    tot = ct.totals
    fine = (ct.cells["config"] != "base").to_numpy()
    unit_of_cell = np.full(len(ct.cells), -1, dtype=np.int64)
    cols = [*KEYS, "config"]
    codes, units = pd.MultiIndex.from_frame(ct.cells.loc[fine, cols]).factorize()
    unit_of_cell[fine] = codes
    g_unit = unit_of_cell[tot.unit]
    keep = g_unit >= 0
    sw = seed_weights(tot, ct.draws, True)[keep]
    values = {m: weighted_unit_mean(tot.sums[m][keep], tot.counts[keep], g_unit[keep], len(units), sw)
              for m in ("safety", "helpfulness")}
    return units.to_frame(index=False, name=cols), values


def replicate_terms(terms: pd.DataFrame, ct: CellTotals, eps: float = EPS) -> np.ndarray:
    """(terms, replicates): each computed term recomputed in every replicate; NaN where its denominator
    is ``eps`` or below there."""
    units, values = replicate_pooled_means(ct)
    index = pd.MultiIndex.from_frame(units)
    out = np.full((len(terms), ct.draws.n_boot), np.nan)
    for i, t in enumerate(terms.itertuples(index=False)):
        metric, seq, other, own = RATIOS[t.ratio]
        at = [index.get_loc((t.judge, t.model, t.beta, c)) for c in (seq, other, own)]
        v = values[metric][at]
        den = v[2] - v[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(den > eps, (v[0] - v[1]) / den, np.nan)
    return out


def intervals(terms: pd.DataFrame, ct: CellTotals | None, level: float = 0.95) -> pd.DataFrame:
    """Per beta (and pooled over betas) and ratio: the mean of the terms, its bootstrap interval (NaN
    without replicates), the number of terms and of valid replicates."""
    if terms.empty:
        return pd.DataFrame(columns=list(INTERVAL_COLUMNS))
    boot = replicate_terms(terms, ct) if ct is not None else None
    beta = terms["beta"].to_numpy(dtype=float)
    groups = [(f"{b:g}", beta == b) for b in sorted(set(beta))] + [(POOLED, np.ones(len(terms), dtype=bool))]
    rows = []
    for label, in_beta in groups:
        for name in RATIOS:
            sel = in_beta & (terms["ratio"] == name).to_numpy()
            if not sel.any():
                continue
            ci, n_valid = percentile_ci(boot[sel].mean(axis=0), level) if boot is not None else ([None, None], 0)
            lo, hi = (np.nan if v is None else v for v in ci)
            rows.append({"beta": label, "ratio": name, "value": float(terms.loc[sel, "value"].mean()),
                         "ci_low": lo, "ci_high": hi, "n_terms": int(sel.sum()), "n_valid": n_valid})
    return pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS))


def intervals_json(table: pd.DataFrame) -> dict[str, dict[str, dict[str, object]]]:
    """{"0.05": {"S": {"value", "ci": [low, high], "n_terms", "n_valid"}, ...}, ..., "pooled": {...}}."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for r in table.itertuples(index=False):
        ci = [None if pd.isna(v) else float(v) for v in (r.ci_low, r.ci_high)]
        out.setdefault(r.beta, {})[r.ratio] = {"value": r.value, "ci": ci, "n_terms": r.n_terms,
                                               "n_valid": r.n_valid}
    return out
