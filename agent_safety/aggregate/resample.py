"""The bootstrap's draws, shared by every interval of the aggregate.

One replicate reweights the study twice: its **test cases** (the universe of every (data, case) seen,
drawn with replacement) and its **seeds** (every seed seen, drawn with replacement once for the whole
study). Seeds are drawn globally, not per point, because a seed is one test split and one training run of
every configuration and of the base model alike: a point and its base stay paired, as in the deltas.

Every quantity is then recomputed per replicate from per-group totals: records are grouped into units
(a frontier point's (judge, seed) cell, a persistence configuration's seed) and, within a unit, by the
set of cases they scored; a group's replicate score sum and case count are two matrix products with the
draws. Records without per-case scores keep their reported score in every replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS: tuple[str, str] = ("safety", "helpfulness")


@dataclass(frozen=True)
class Draws:
    """How many times each case and each seed is drawn, per replicate (columns are replicates)."""

    case_of: np.ndarray
    """Case-universe index of each row of the per-case table."""
    cases: np.ndarray | None
    """(cases in the universe, replicates) counts; None when no record has per-case scores."""
    seed_of: np.ndarray
    """Seed index of each row of the run table."""
    seeds: np.ndarray
    """(seeds seen, replicates) counts."""
    n_boot: int
    rng_seed: int


def make_draws(table: pd.DataFrame, cases: pd.DataFrame, n_boot: int, rng_seed: int) -> Draws:
    """Draw cases, then seeds, from one seeded generator (the case draws come first, so an interval that
    resamples cases only is the same whether or not seeds are drawn afterwards)."""
    rng = np.random.default_rng(rng_seed)
    case_of = np.zeros(0, dtype=np.int64)
    case_draws = None
    if len(cases):
        crow = cases["row"].to_numpy()
        data_code = pd.factorize(table["data"])[0] if "data" in table else np.zeros(len(table), np.int64)
        case = cases["case"].to_numpy()
        span = int(case.max() - case.min()) + 1
        # Sorted codes, as np.unique's inverse (the draws' order), by hashing: faster on millions of rows.
        case_of = pd.factorize(data_code[crow] * span + (case - case.min()), sort=True)[0]
        n_univ = int(case_of.max()) + 1
        case_draws = rng.multinomial(n_univ, np.full(n_univ, 1.0 / n_univ), size=n_boot).T.astype(float)
    seed_of, seeds = pd.factorize(table["seed"])
    n_seeds = max(len(seeds), 1)
    seed_draws = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).T.astype(float)
    return Draws(case_of.astype(np.int64), case_draws, seed_of.astype(np.int64), seed_draws, n_boot, rng_seed)


@dataclass(frozen=True)
class Totals:
    """Per group of records and per replicate: score sums and case counts under the case draws."""

    unit: np.ndarray
    """Unit of each group."""
    seed: np.ndarray
    """Seed index of each group (a unit never mixes seeds)."""
    rows: np.ndarray
    """Records in each group."""
    sums: dict[str, np.ndarray]
    """Metric -> (groups, replicates) score sums."""
    counts: np.ndarray
    """(groups, replicates) case counts (for records without cases: their fixed weight)."""


def group_totals(table: pd.DataFrame, cases: pd.DataFrame, draws: Draws, unit: np.ndarray,
                 no_case_weight: np.ndarray) -> Totals:
    """Totals of the records of each unit, grouped by case set. ``unit`` (per table row, -1: left out)
    must not mix seeds. A record without per-case scores is a group of its own whose sum is its score
    times ``no_case_weight`` in every replicate. Records sharing unit and case set are pooled case by
    case: exact, since under any draw they have the same case count, and it keeps the matrices small."""
    unit = np.asarray(unit, dtype=np.int64)
    has_cases = np.zeros(len(table), dtype=bool)
    if len(cases):
        has_cases[cases["row"].to_numpy()] = True
    used = unit >= 0
    gkey = np.where(has_cases, table["case_set"].to_numpy(), -1 - np.arange(len(table)))
    group_id = np.full(len(table), -1, dtype=np.int64)
    group_id[used] = pd.MultiIndex.from_arrays([unit[used], gkey[used]]).factorize()[0]
    n_groups = int(group_id.max()) + 1 if used.any() else 0
    g_unit = np.zeros(n_groups, dtype=np.int64)
    g_unit[group_id[used]] = unit[used]
    g_seed = np.zeros(n_groups, dtype=np.int64)
    g_seed[group_id[used]] = draws.seed_of[used]
    g_rows = np.bincount(group_id[used], minlength=n_groups).astype(float)
    fixed_rows = used & ~has_cases
    gid_fixed = group_id[fixed_rows]
    w_fixed = np.asarray(no_case_weight, dtype=float)[fixed_rows]

    def fixed(weights: np.ndarray) -> np.ndarray:  # float even when no row is fixed (bincount gives ints then)
        total = np.bincount(gid_fixed, weights=weights, minlength=n_groups).astype(float)
        return np.repeat(total[:, None], draws.n_boot, axis=1)

    counts = fixed(w_fixed)
    sums = {m: fixed(w_fixed * table[m].to_numpy(dtype=float)[fixed_rows]) for m in METRICS}
    if draws.cases is not None and len(cases):
        crow = cases["row"].to_numpy()
        keep = used[crow]
        n_univ = draws.cases.shape[0]
        flat = group_id[crow[keep]] * n_univ + draws.case_of[keep]
        size = n_groups * n_univ
        case_groups = np.bincount(group_id[crow[keep]], minlength=n_groups) > 0
        # Counts and both metrics' sums stacked: one matrix product with the draws, not three.
        stacked = np.concatenate([
            np.bincount(flat, weights=w, minlength=size).reshape(n_groups, n_univ)[case_groups]
            for w in (None, *(cases[m].to_numpy(dtype=float)[keep] for m in METRICS))]).astype(float)
        products = np.split(stacked @ draws.cases, len(METRICS) + 1)
        counts[case_groups] = products[0]
        for m, product in zip(METRICS, products[1:], strict=True):
            sums[m][case_groups] = product
    return Totals(g_unit, g_seed, g_rows, sums, counts)


def seed_weights(totals: Totals, draws: Draws, resample_seeds: bool) -> np.ndarray:
    """(groups, replicates) weight of each group's seed: its draw count, or 1 when seeds are not resampled."""
    if not resample_seeds:
        return np.ones((len(totals.unit), draws.n_boot))
    return draws.seeds[totals.seed]


def unit_sum(values: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """Sum (groups, replicates) rows into (units, replicates). ``np.add.reduceat`` over the groups sorted by
    unit: no BLAS call, whose threads spin against each other on a busy 2-core machine, and no slow
    ``np.add.at``."""
    out = np.zeros((n_units, values.shape[1]))
    if not len(unit):
        return out
    order = np.argsort(unit, kind="stable")
    u = unit[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    out[u[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


def weighted_unit_mean(num: np.ndarray, den: np.ndarray, unit: np.ndarray, n_units: int,
                       sw: np.ndarray) -> np.ndarray:
    """Σ sw·num / Σ sw·den per unit and replicate. A unit none of whose seeds was drawn in a replicate keeps
    all its seeds there (sw = 1): with every seed shared by every unit, as in the study, this never
    happens; for units on fewer seeds than the study, it keeps their replicates rather than losing them."""
    top = unit_sum(num * sw, unit, n_units)
    bottom = unit_sum(den * sw, unit, n_units)
    undrawn = unit_sum(sw, unit, n_units) == 0
    if undrawn.any():
        top[undrawn] = unit_sum(num, unit, n_units)[undrawn]
        bottom[undrawn] = unit_sum(den, unit, n_units)[undrawn]
    with np.errstate(invalid="ignore", divide="ignore"):
        return top / bottom


def percentile_ci(values: np.ndarray, level: float) -> tuple[list[float | None], int]:
    """Percentile interval over the finite replicates (last axis) and how many there were."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    if not ok.any():
        return [None, None], 0
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values[ok], [alpha, 1.0 - alpha])
    return [float(lo), float(hi)], int(ok.sum())
