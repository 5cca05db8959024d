"""Persistence on hand-made tables whose ratios are worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from agent_safety.aggregate import persistence


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
