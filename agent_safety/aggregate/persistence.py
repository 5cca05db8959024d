"""How much of the first training stage survives the second.

Persist(S) = (Safety(S→H) − Safety(H)) / (Safety(S) − Safety(H)): 1 when safety training fully survives
later helpfulness training, 0 when S→H is no safer than H alone. Persist(H) mirrors it for helpfulness.
Each term is computed per (judge, base model, beta), pooling all (seed, test case) scores of each
configuration, and the terms are then averaged per beta.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from agent_safety.records.schema import Skip

EPS = 1e-9
#: name -> (metric, sequential config, other-only config, own-only config).
RATIOS: Mapping[str, tuple[str, str, str, str]] = MappingProxyType({
    "S": ("safety", "S→H", "H", "S"),
    "H": ("helpfulness", "H→S", "S", "H"),
})
KEYS: tuple[str, ...] = ("judge", "model", "beta")


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
