"""The frontier recipe on synthetic tables whose slope, R² and means are known by construction."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from agent_safety.aggregate import frontier, residuals
from agent_safety.aggregate.resample import make_draws
from agent_safety.records.collect import build_tables, parse_record

CONFIG_OBJECTIVES = {"base": [], "S": ["safety"], "H": ["helpfulness"], "S&H": ["both"],
                     "S→H": ["safety", "helpfulness"], "H→S": ["helpfulness", "safety"]}


def record(model: str, config: str, seed: int, judge: str, safety: float, helpfulness: float, *,
           beta: float = 0.1, cases: list[int] | None = None, case_safety: list[float] | None = None,
           case_helpfulness: list[float] | None = None, run_id: str | None = None) -> dict:
    objs = CONFIG_OBJECTIVES[config]
    return {"run_id": run_id or f"{model}-{config}-{beta}-{seed}", "model": model, "judge": judge,
            "stage": len(objs), "objectives": objs, "beta": beta, "seed": seed, "safety": safety,
            "helpfulness": helpfulness, "n_test_cases": len(cases or []), "cases": cases or [],
            "case_safety": case_safety or [], "case_helpfulness": case_helpfulness or []}


def tables(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    table, cases, _ = build_tables([parse_record(r) for r in records])
    return table, cases


def designed_table(deltas: dict[tuple[str, str], tuple[float, float]], base: dict[str, tuple[float, float]],
                   seeds: int = 3) -> pd.DataFrame:
    """Records whose per-seed noise cancels, so each point's mean is base + delta exactly."""
    noise = np.linspace(-0.1, 0.1, seeds)
    recs = []
    for model, (bs, bh) in base.items():
        for seed, judge in itertools.product(range(seeds), ("j1", "j2")):
            recs.append(record(model, "base", seed, judge, bs + noise[seed], bh - noise[seed]))
    for (model, config), (ds, dh) in deltas.items():
        bs, bh = base[model]
        for seed, judge in itertools.product(range(seeds), ("j1", "j2")):
            recs.append(record(model, config, seed, judge, bs + ds + noise[seed], bh + dh + noise[seed]))
    return tables(recs)[0]


def test_ols_known_line_and_noise():
    x = np.linspace(-1, 1, 21)
    exact = frontier.ols(x, 0.3 - 0.8 * x)
    assert exact.slope == pytest.approx(-0.8) and exact.intercept == pytest.approx(0.3)
    assert exact.r == pytest.approx(-1.0) and exact.r2 == pytest.approx(1.0) and exact.n == 21
    rng = np.random.default_rng(0)
    y = 2.0 * x + rng.normal(0, 0.5, len(x))
    fit = frontier.ols(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    assert np.isnan(frontier.ols(np.ones(3), np.arange(3.0)).slope)


def test_recipe_recovers_designed_slope_and_r2():
    # Deltas on the line d_s = 0.2 - 0.5 d_h except one point pushed off it: R² is known in closed form.
    dh = {("m1", "S"): -1.0, ("m1", "H"): 0.4, ("m1", "S→H"): -0.6, ("m2", "S&H"): -0.2, ("m2", "H→S"): -0.8}
    ds = {k: 0.2 - 0.5 * v for k, v in dh.items()}
    ds[("m2", "S&H")] += 0.15
    deltas = {k: (ds[k], dh[k]) for k in dh}
    table = designed_table(deltas, {"m1": (1.2, 2.2), "m2": (1.5, 2.0)})
    points = frontier.add_deltas(frontier.point_means(table))
    got = points.set_index(["model", "config"])
    for key, (s, h) in deltas.items():
        assert got.loc[key, "d_safety"] == pytest.approx(s)
        assert got.loc[key, "d_helpfulness"] == pytest.approx(h)
    fit = frontier.fit_points(points)
    x = np.array([dh[k] for k in dh])
    y = np.array([ds[k] for k in dh])
    assert fit.n == 5  # base points excluded
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    assert fit.slope == pytest.approx(np.polyfit(x, y, 1)[0])
    exact = frontier.fit_points(frontier.add_deltas(frontier.point_means(designed_table(
        {k: (0.2 - 0.5 * v, v) for k, v in dh.items()}, {"m1": (1.2, 2.2), "m2": (1.5, 2.0)}))))
    assert exact.slope == pytest.approx(-0.5) and exact.intercept == pytest.approx(0.2)
    assert exact.r2 == pytest.approx(1.0)


def test_point_means_average_cells_then_seeds_and_std_over_seeds():
    recs = [
        record("m", "S", 0, "a", 2.0, 1.0, run_id="r1"),
        record("m", "S", 0, "a", 3.0, 1.0, run_id="r2"),  # same (judge, seed) cell: cell mean 2.5
        record("m", "S", 0, "b", 1.5, 1.0, run_id="r3"),
        record("m", "S", 1, "a", 1.0, 2.0, run_id="r4"),
        record("m", "base", 0, "a", 1.0, 2.0, beta=0.05, run_id="b1"),
        record("m", "base", 1, "a", 1.2, 2.0, beta=0.1, run_id="b2"),
    ]
    points = frontier.point_means(tables(recs)[0]).set_index(["model", "config"])
    s = points.loc[("m", "S")]
    assert s["safety"] == pytest.approx((2.5 + 1.5 + 1.0) / 3)
    assert s["n_records"] == 4 and s["n_cells"] == 3 and s["n_seeds"] == 2 and s["n_judges"] == 2
    assert s["safety_std"] == pytest.approx(np.std([(2.5 + 1.5) / 2, 1.0], ddof=1))
    base = points.loc[("m", "base")]
    assert np.isnan(base["beta"]) and base["safety"] == pytest.approx(1.1)  # base pools every beta


def test_pareto_flags():
    x = np.array([0.0, 1.0, 0.5, 1.0, -1.0])
    y = np.array([1.0, 0.0, -0.1, 0.0, 2.0])
    assert frontier.pareto_mask(x, y).tolist() == [True, True, False, True, True]
    table = designed_table({("m", "S"): (1.0, -1.0), ("m", "H"): (0.1, 0.3), ("m", "S→H"): (0.5, -1.1)},
                           {"m": (1.0, 2.0)})
    points = frontier.add_pareto(frontier.add_deltas(frontier.point_means(table))).set_index("config")
    assert points.loc["S", "pareto"] and points.loc["H", "pareto"] and not points.loc["S→H", "pareto"]
    assert not points.loc["base", "pareto"]  # base points are not candidates of the delta frontier


def _case_records(rng: np.random.Generator, noisy: bool) -> list[dict]:
    recs = []
    cases = list(range(20))
    for model, config in itertools.product(("m1", "m2"), ("base", "S", "H", "S→H")):
        shift = {"base": 0.0, "S": 1.0, "H": -0.2, "S→H": 0.6}[config] + (0.1 if model == "m2" else 0)
        for seed in range(2):
            noise = rng.normal(0, 0.6, (2, 20)) if noisy else np.zeros((2, 20))
            cs = np.clip(1.5 + shift + noise[0], 0, 3)
            ch = np.clip(2.0 - shift + noise[1] + 0.05 * seed, 0, 3)
            recs.append(record(model, config, seed, "j", float(cs.mean()), float(ch.mean()), cases=cases,
                               case_safety=cs.tolist(), case_helpfulness=ch.tolist()))
    return recs


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    table, cases = tables(_case_records(np.random.default_rng(1), noisy=True))
    fit = frontier.fit_points(frontier.add_deltas(frontier.point_means(table)))
    a = frontier.bootstrap_r2(table, cases, n_boot=300, seed=7)
    b = frontier.bootstrap_r2(table, cases, n_boot=300, seed=7)
    c = frontier.bootstrap_r2(table, cases, n_boot=300, seed=8)
    assert a == b and a["r2_ci"] != c["r2_ci"]
    lo, hi = a["r2_ci"]
    assert 0 <= lo < fit.r2 < hi <= 1 and a["n_valid"] == 300


def test_bootstrap_without_case_variance_is_the_point_estimate():
    table, cases = tables(_case_records(np.random.default_rng(1), noisy=False))
    fit = frontier.fit_points(frontier.add_deltas(frontier.point_means(table)))
    lo, hi = frontier.bootstrap_r2(table, cases, n_boot=50, seed=0)["r2_ci"]
    assert lo == pytest.approx(fit.r2) and hi == pytest.approx(fit.r2)
    # Records without per-case scores keep their reported means in every replicate.
    no_cases = table.assign(case_set=0)
    lo, hi = frontier.bootstrap_r2(no_cases, cases.iloc[0:0], n_boot=20, seed=0)["r2_ci"]
    assert lo == pytest.approx(fit.r2) and hi == pytest.approx(fit.r2)


# ------------------------------------------------------------------- distance from the frontier (LOCO)

#: Δhelpfulness of each configuration around its model's: every configuration spans the whole x range, so
#: leaving one out barely moves the others' x spread (no leverage), and S&H sits at the middle.
CONFIG_DH = {"S": -0.15, "S→H": -0.07, "S&H": 0.0, "H→S": 0.07, "H": 0.15}
MODEL_DH = {"m1": -0.6, "m2": -0.2, "m3": 0.2, "m4": 0.6}


def planted_deltas(offset: float) -> dict[tuple[str, str], tuple[float, float]]:
    """(model, config) -> (Δsafety, Δhelpfulness): on Δs = 0.3 - 0.8 Δh, except S&H, ``offset`` above it."""
    return {(m, c): (0.3 - 0.8 * (mdh + cdh) + (offset if c == "S&H" else 0.0), mdh + cdh)
            for m, mdh in MODEL_DH.items() for c, cdh in CONFIG_DH.items()}


def planted_table(offset: float, *, rng_seed: int = 0, n_cases: int = 6, seed_spread: float = 0.25,
                  case_dev: float = 0.45) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Records whose point means are exactly base + delta (per-seed shifts and per-case deviations cancel
    within each point), while cases and seeds still vary, so the bootstrap has spread to measure."""
    rng = np.random.default_rng(rng_seed)
    balanced = np.repeat([-case_dev, case_dev], n_cases // 2)
    deltas = planted_deltas(offset) | {(m, "base"): (0.0, 0.0) for m in MODEL_DH}
    recs = []
    for (model, config), (ds, dh) in deltas.items():
        for seed, shift in enumerate(rng.permutation(np.linspace(-seed_spread, seed_spread, 3))):
            cs = 1.0 + ds + shift + rng.permutation(balanced)
            ch = 1.55 + dh - shift + rng.permutation(balanced)
            recs.append(record(model, config, seed, "j", float(cs.mean()), float(ch.mean()),
                               cases=list(range(n_cases)), case_safety=cs.tolist(), case_helpfulness=ch.tolist()))
    return tables(recs)


def residuals_of(table: pd.DataFrame, cases: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    points = frontier.add_deltas(frontier.point_means(table))
    cells = frontier.cell_totals(table, cases, make_draws(table, cases, n_boot, 0))
    return residuals.residual_table(points, frontier.replicate_deltas(cells)).set_index("config")


def test_loco_residuals_match_a_refit_per_replicate():
    rng = np.random.default_rng(3)
    dx, dy = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    configs = np.array(list("aabbbccdd"))
    got, slope, intercept = residuals.loco_residuals(dx, dy, configs, "b")
    for i in range(4):
        s, c = np.polyfit(dx[i, configs != "b"], dy[i, configs != "b"], 1)
        assert slope[i] == pytest.approx(s) and intercept[i] == pytest.approx(c)
        assert got[i] == pytest.approx(np.mean(dy[i, configs == "b"] - (s * dx[i, configs == "b"] + c)))
    assert np.isnan(residuals.loco_residuals(dx[:, :3], dy[:, :3], configs[:3], "a")[0]).all()  # one point left


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_planted_off_frontier_configuration_is_the_one_flagged(rng_seed: int):
    table, cases = planted_table(0.3, rng_seed=rng_seed)
    got = residuals_of(table, cases)
    assert list(got.index) == ["S", "H", "S&H", "S→H", "H→S"]
    # Point estimates, known by construction: S&H is 0.3 above the exact line of the others; each other
    # configuration is measured against a line that S&H pulls up, so it sits a little below.
    assert got.loc["S&H", "residual"] == pytest.approx(0.3)
    assert got.loc["S&H", "slope"] == pytest.approx(-0.8) and got.loc["S&H", "intercept"] == pytest.approx(0.3)
    deltas = planted_deltas(0.3)
    for config in ["S", "H", "S→H", "H→S"]:
        rest = [v for (m, c), v in deltas.items() if c != config]
        slope, intercept = np.polyfit([h for _, h in rest], [s for s, _ in rest], 1)
        own = [v for (m, c), v in deltas.items() if c == config]
        expected = np.mean([s - (slope * h + intercept) for s, h in own])
        assert got.loc[config, "residual"] == pytest.approx(expected) and -0.1 < expected < 0
    # Intervals: S&H's excludes zero, every other one includes it.
    assert got.loc["S&H", "ci_low"] > 0 and got.loc["S&H", "off_frontier"]
    others = got.drop(index="S&H")
    assert (others["ci_low"] < 0).all() and (others["ci_high"] > 0).all() and not others["off_frontier"].any()
    assert (got["ci_low"] <= got["residual"]).all() and (got["residual"] <= got["ci_high"]).all()
    assert (got["n_points"] == 4).all() and (got["n_fit"] == 16).all() and (got["n_valid"] == 1000).all()


def test_without_a_planted_offset_nothing_is_flagged():
    got = residuals_of(*planted_table(0.0))
    assert np.allclose(got["residual"], 0.0, atol=1e-12) and not got["off_frontier"].any()


def test_residuals_without_bootstrap_have_no_interval():
    table, _ = planted_table(0.3)
    got = residuals.residual_table(frontier.add_deltas(frontier.point_means(table)), None).set_index("config")
    assert got.loc["S&H", "residual"] == pytest.approx(0.3)
    assert got["ci_low"].isna().all() and not got["off_frontier"].any() and (got["n_valid"] == 0).all()


def test_seed_resampling_widens_the_r2_interval():
    table, cases = tables(_case_records(np.random.default_rng(1), noisy=True))
    b = frontier.bootstrap_r2(table, cases, n_boot=300, seed=7)
    (lo, hi), (slo, shi) = b["r2_ci"], b["r2_ci_seeds"]
    assert slo <= lo and hi - lo < shi - slo  # seeds add the spread between training runs
