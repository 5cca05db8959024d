"""The study's train/test split of cases."""

from __future__ import annotations

import random


def split_cases(n_cases: int, seed: int) -> tuple[list[int], list[int]]:
    """Return (train, test) case indices, exactly as the study split them.

    ``random.seed(seed); idx = list(range(n)); random.shuffle(idx)``; the test set is the second half.
    Both halves are returned sorted.
    """
    idx = list(range(n_cases))
    random.Random(seed).shuffle(idx)  # same stream as random.seed(seed); random.shuffle(idx)
    half = n_cases // 2
    return sorted(idx[:half]), sorted(idx[half:])
