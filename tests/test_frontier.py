"""The frontier recipe on synthetic tables whose slope, R² and means are known by construction."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from agent_safety.aggregate import frontier
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
