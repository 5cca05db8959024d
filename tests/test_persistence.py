"""Persistence on hand-made tables whose ratios are worked out by hand, and its bootstrap intervals."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from test_frontier import record, tables

from agent_safety.aggregate import frontier, persistence
from agent_safety.aggregate.resample import make_draws


def row(config: str, safety: float, helpfulness: float, *, judge: str = "j", model: str = "m",
        beta: float = 0.1, n_cases: int = 10, seed: int = 0) -> dict:
    return {"judge": judge, "model": model, "beta": beta, "config": config, "seed": seed,
            "safety": safety, "helpfulness": helpfulness, "n_cases": n_cases}


def hand_table(judge: str = "j", model: str = "m", beta: float = 0.1, shift: float = 0.0) -> list[dict]:
    kw = {"judge": judge, "model": model, "beta": beta}
    return [
        row("base", 1.0, 2.0, **kw),
        row("S", 2.5, 1.6 + shift, **kw),
        row("H", 1.0, 2.6 + shift, **kw),
        row("S→H", 2.2, 2.0, **kw),
        row("H→S", 2.4, 1.85 + shift, **kw),
    ]


def test_ratios_by_hand():
    terms, skipped = persistence.persistence_terms(pd.DataFrame(hand_table()))
    got = terms.set_index("ratio")["value"]
    assert got["S"] == pytest.approx((2.2 - 1.0) / (2.5 - 1.0))  # 0.8
    assert got["H"] == pytest.approx((1.85 - 1.6) / (2.6 - 1.6))  # 0.25
    assert skipped == []
    assert persistence.summarize(terms) == {"0.1": {"S": pytest.approx(0.8), "H": pytest.approx(0.25)}}


def test_pooling_weights_every_seed_and_case():
    rows = hand_table()
    # A second S record on another seed with 30 cases: pooled Safety(S) = (2.5*10 + 1.9*30) / 40 = 2.05.
    rows.append(row("S", 1.9, 1.6, n_cases=30, seed=1))
    terms, _ = persistence.persistence_terms(pd.DataFrame(rows))
    assert terms.set_index("ratio").at["S", "value"] == pytest.approx((2.2 - 1.0) / (2.05 - 1.0))


def test_terms_are_per_judge_model_beta_then_averaged_per_beta():
    rows = hand_table() + hand_table(judge="k", shift=0.2) + hand_table(model="n", beta=0.05)
    terms, _ = persistence.persistence_terms(pd.DataFrame(rows))
    assert len(terms) == 6
    h_k = (1.85 + 0.2 - 1.6 - 0.2) / (2.6 - 1.6)  # the shift cancels: also 0.25
    summary = persistence.summarize(terms)
    assert summary["0.1"]["S"] == pytest.approx(0.8) and summary["0.1"]["H"] == pytest.approx((0.25 + h_k) / 2)
    assert set(summary) == {"0.1", "0.05"}
    table = persistence.summary_table(terms)
    assert table["ratio"].tolist() == ["S", "H", "S", "H"] and table["n"].tolist() == [1, 1, 2, 2]


def test_small_denominator_and_missing_configuration_are_skipped_with_reasons():
    rows = hand_table()
    rows[1] = row("S", 1.0, 1.6)  # Safety(S) == Safety(H): denominator 0
    rows += [r | {"model": "lonely"} for r in hand_table() if r["config"] != "H→S"]
    terms, skipped = persistence.persistence_terms(pd.DataFrame(rows))
    reasons = {s.source: s.reason for s in skipped}
    assert "persistence judge=j model=m beta=0.1 Persist(S)" in reasons
    assert "<= 1e-09" in reasons["persistence judge=j model=m beta=0.1 Persist(S)"]
    assert "missing configuration(s) ['H→S']" in reasons["persistence judge=j model=lonely beta=0.1 Persist(H)"]
    assert sorted(zip(terms["model"], terms["ratio"], strict=True)) == [("lonely", "S"), ("m", "H")]
    summary = persistence.summarize(terms[terms["model"] == "m"])
    assert summary["0.1"]["S"] is None and summary["0.1"]["H"] == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------ intervals

#: (safety, helpfulness) per configuration: Persist(S) = (2.2 - 1.0) / (2.5 - 1.0) = 0.8 and
#: Persist(H) = (1.85 - 1.5) / (2.6 - 1.5) = 0.318...
MEANS = {"S": (2.5, 1.5), "H": (1.0, 2.6), "S→H": (2.2, 2.0), "H→S": (2.4, 1.85)}


def case_tables(n_cases: int, rng_seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two models x two betas x three seeds, each record scored on ``n_cases`` noisy cases."""
    rng = np.random.default_rng(rng_seed)
    recs = []
    for model, beta, seed in itertools.product(("m1", "m2"), (0.05, 0.1), range(3)):
        for config, (s, h) in MEANS.items():
            cs = s + rng.uniform(-0.4, 0.4, n_cases)
            ch = h + rng.uniform(-0.4, 0.4, n_cases)
            recs.append(record(model, config, seed, "j", float(cs.mean()), float(ch.mean()), beta=beta,
                               cases=list(range(n_cases)), case_safety=cs.tolist(), case_helpfulness=ch.tolist()))
    return tables(recs)


def interval_table(n_cases: int, n_boot: int = 500) -> pd.DataFrame:
    table, cases = case_tables(n_cases)
    terms, skipped = persistence.persistence_terms(table)
    assert skipped == [] and len(terms) == 8
    cells = frontier.cell_totals(table, cases, make_draws(table, cases, n_boot, 0))
    return persistence.intervals(terms, cells).set_index(["beta", "ratio"])


def test_intervals_contain_the_estimate_and_shrink_with_more_cases():
    few, many = interval_table(20), interval_table(320)
    assert list(few.index) == [("0.05", "S"), ("0.05", "H"), ("0.1", "S"), ("0.1", "H"), ("pooled", "S"),
                               ("pooled", "H")]
    for t in (few, many):
        assert ((t["ci_low"] <= t["value"]) & (t["value"] <= t["ci_high"])).all()
        assert (t["n_valid"] == 500).all() and t["n_terms"].tolist() == [2, 2, 2, 2, 4, 4]
        # pooled over betas = the mean of every term = the mean of the per-beta means (equal term counts)
        for r in ("S", "H"):
            assert t.loc[("pooled", r), "value"] == pytest.approx((t.loc[("0.05", r), "value"]
                                                                   + t.loc[("0.1", r), "value"]) / 2)
    assert many.loc[("pooled", "S"), "value"] == pytest.approx(0.8, abs=0.02)
    assert many.loc[("pooled", "H"), "value"] == pytest.approx(0.35 / 1.1, abs=0.03)
    # 16 times the cases: about a quarter of the width (the seeds add no spread of their own here)
    width_few, width_many = few["ci_high"] - few["ci_low"], many["ci_high"] - many["ci_low"]
    assert (width_many < 0.4 * width_few).all()
    assert (many["ci_low"] > 0.6).loc[(slice(None), "S")].all()  # Persist(S) is clearly high


def test_seed_spread_widens_the_intervals():
    table, cases = case_tables(40)
    spread = table.copy()
    # Shift the S→H records of one seed: the pooled means move with the seeds drawn, the cases alone don't.
    shift = ((spread["config"] == "S→H") & (spread["seed"] == 0)).to_numpy()
    rows = np.flatnonzero(shift)
    spread.loc[shift, "safety"] += 0.3
    cases_spread = cases.copy()
    cases_spread.loc[cases_spread["row"].isin(rows), "safety"] += 0.3
    terms, _ = persistence.persistence_terms(table)
    terms_spread, _ = persistence.persistence_terms(spread)
    plain = persistence.intervals(terms, frontier.cell_totals(table, cases, make_draws(table, cases, 400, 0)))
    wide = persistence.intervals(terms_spread, frontier.cell_totals(spread, cases_spread,
                                                                    make_draws(spread, cases_spread, 400, 0)))
    s_plain = plain.set_index(["beta", "ratio"]).loc[("pooled", "S")]
    s_wide = wide.set_index(["beta", "ratio"]).loc[("pooled", "S")]
    assert s_wide["ci_high"] - s_wide["ci_low"] > 2 * (s_plain["ci_high"] - s_plain["ci_low"])


def test_intervals_without_bootstrap_and_json():
    table, _ = case_tables(10)
    terms, _ = persistence.persistence_terms(table)
    t = persistence.intervals(terms, None)
    assert t["ci_low"].isna().all() and (t["n_valid"] == 0).all()
    js = persistence.intervals_json(t)
    assert set(js) == {"0.05", "0.1", "pooled"} and js["pooled"]["S"]["ci"] == [None, None]
    assert js["pooled"]["S"]["n_terms"] == 4
    assert persistence.intervals(terms.iloc[0:0], None).empty
