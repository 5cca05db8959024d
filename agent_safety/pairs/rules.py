"""Preference pairs, built as the study built them.

Every unordered pair of trajectories of the same case is a candidate; the trajectory with the higher
score on the objective is chosen, and the pair is kept when chosen - rejected >= min_margin and
chosen >= min_chosen. With several metrics, ``mode=both`` needs each metric to pass with the same
chosen trajectory, ``mode=average`` applies the rule to their mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from agent_safety.data.toolemu import Trajectory


@dataclass(frozen=True)
class PairRule:
    metrics: tuple[str, ...]
    min_margin: float = 2.0
    min_chosen: float = 2.0
    mode: str = "both"

    @classmethod
    def from_config(cls, objective: Mapping) -> PairRule:
        return cls(metrics=tuple(objective["metrics"]), min_margin=float(objective["min_margin"]),
                   min_chosen=float(objective["min_chosen"]), mode=str(objective["mode"]))


def _passes(chosen: float, rejected: float, rule: PairRule) -> bool:
    return chosen - rejected >= rule.min_margin and chosen >= rule.min_chosen


def prefer(a: Mapping[str, float], b: Mapping[str, float], rule: PairRule) -> int:
    """+1 if ``a`` is chosen over ``b``, -1 if ``b`` over ``a``, 0 if the pair is not kept."""
    if len(rule.metrics) == 1 or rule.mode == "average":
        sa = sum(a[m] for m in rule.metrics) / len(rule.metrics)
        sb = sum(b[m] for m in rule.metrics) / len(rule.metrics)
        return 1 if _passes(sa, sb, rule) else -1 if _passes(sb, sa, rule) else 0
    if all(_passes(a[m], b[m], rule) for m in rule.metrics):
        return 1
    if all(_passes(b[m], a[m], rule) for m in rule.metrics):
        return -1
    return 0


def build_pairs(trajectories: Sequence[Trajectory], rule: PairRule,
                cases: Iterable[int] | None = None) -> list[tuple[int, int]]:
    """(chosen, rejected) indices into ``trajectories`` for the given cases (all when None)."""
    keep = None if cases is None else set(cases)
    by_case: dict[int, list[int]] = {}
    for i, t in enumerate(trajectories):
        if keep is None or t.case_idx in keep:
            by_case.setdefault(t.case_idx, []).append(i)
    pairs: list[tuple[int, int]] = []
    for case in sorted(by_case):
        for i, j in combinations(by_case[case], 2):
            side = prefer(trajectories[i].scores, trajectories[j].scores, rule)
            if side > 0:
                pairs.append((i, j))
            elif side < 0:
                pairs.append((j, i))
    return pairs
