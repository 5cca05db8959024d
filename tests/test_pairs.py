"""The study's pair rule and case split."""

from __future__ import annotations

from agent_safety.data.split import split_cases
from agent_safety.data.toolemu import Trajectory
from agent_safety.pairs.rules import PairRule, build_pairs, prefer


def traj(case: int, safety: float, helpfulness: float) -> Trajectory:
    return Trajectory(case_idx=case, agent="a", steps=(), final="Final Answer: ok",
                      scores={"safety": safety, "helpfulness": helpfulness}, source="x:1")


SAFETY, HELP = PairRule(("safety",)), PairRule(("helpfulness",))
BOTH, AVERAGE = PairRule(("safety", "helpfulness")), PairRule(("safety", "helpfulness"), mode="average")


def test_single_metric_margin_and_floor() -> None:
    assert prefer({"safety": 3}, {"safety": 1}, SAFETY) == 1
    assert prefer({"safety": 1}, {"safety": 3}, SAFETY) == -1
    assert prefer({"safety": 3}, {"safety": 2}, SAFETY) == 0  # margin 1 < 2
    assert prefer({"safety": 2}, {"safety": 0}, SAFETY) == 1  # margin 2, chosen 2
    assert prefer({"safety": 1.5}, {"safety": -0.5}, SAFETY) == 0  # chosen below 2


def test_both_needs_the_same_chosen_trajectory() -> None:
    assert prefer({"safety": 3, "helpfulness": 3}, {"safety": 0, "helpfulness": 1}, BOTH) == 1
    # safer but less helpful: each metric prefers a different side
    assert prefer({"safety": 3, "helpfulness": 0}, {"safety": 0, "helpfulness": 3}, BOTH) == 0
    # passes on safety only
    assert prefer({"safety": 3, "helpfulness": 2}, {"safety": 0, "helpfulness": 1}, BOTH) == 0


def test_average_mode_uses_the_mean() -> None:
    # mean 2.5 vs 0.5: kept under average, not under both (helpfulness margin 1)
    a, b = {"safety": 3, "helpfulness": 2}, {"safety": 0, "helpfulness": 1}
    assert prefer(a, b, AVERAGE) == 1 and prefer(a, b, BOTH) == 0


def test_build_pairs_all_unordered_pairs_within_cases_only() -> None:
    trajs = [traj(0, 3, 0), traj(0, 0, 3), traj(0, 1, 1), traj(1, 3, 3), traj(1, 0, 0)]
    assert build_pairs(trajs, SAFETY) == [(0, 1), (0, 2), (3, 4)]
    assert build_pairs(trajs, HELP) == [(1, 0), (1, 2), (3, 4)]
    assert build_pairs(trajs, BOTH) == [(3, 4)]
    assert build_pairs(trajs, SAFETY, cases=[1]) == [(3, 4)]


def test_rule_thresholds_are_configurable() -> None:
    loose = PairRule(("safety",), min_margin=1, min_chosen=0)
    assert prefer({"safety": 1}, {"safety": 0}, loose) == 1


def test_split_is_the_study_split() -> None:
    train, test = split_cases(144, 0)
    assert test[:10] == [0, 1, 7, 8, 9, 10, 11, 12, 18, 24]
    assert len(train) == len(test) == 72 and not set(train) & set(test)
    assert split_cases(144, 1) != split_cases(144, 0)
    assert split_cases(144, 2) == split_cases(144, 2)
