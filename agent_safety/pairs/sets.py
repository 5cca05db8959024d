"""A stage's preference pairs as token ids: built by the objective's rule, length-filtered, cached."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent_safety.data.toolemu import Benchmark
from agent_safety.pairs.formatting import Tokenized
from agent_safety.pairs.rules import PairRule, build_pairs
from agent_safety.store.cache import cached_arrays, key


@dataclass
class StagePairs:
    """The stage's training pairs as token ids (and, with ``data.mask_observations``, the masks of the agent's own
    tokens), after the length filter."""

    rows: list[dict[str, list[int]]]
    dropped: int
    """Pairs longer than ``trainer.max_length``: dropped, never truncated."""


def pair_rows(pairs: Sequence[tuple[int, int]], bench: Benchmark, tokenized: Tokenized,
              max_length: int) -> StagePairs:
    rows, dropped = [], 0
    for c, r in pairs:
        case = bench.trajectories[c].case_idx
        if max(tokenized.length(c, case), tokenized.length(r, case)) > max_length:
            dropped += 1
            continue
        row = {"prompt_ids": tokenized.prompt_ids[case], "chosen_ids": tokenized.completion_ids[c],
               "rejected_ids": tokenized.completion_ids[r]}
        if tokenized.completion_masks is not None:  # only the agent's own tokens count in the loss
            row |= {"chosen_mask": tokenized.completion_masks[c], "rejected_mask": tokenized.completion_masks[r]}
        rows.append(row)
    return StagePairs(rows=rows, dropped=dropped)


def pair_set(bench: Benchmark, tokenized: Tokenized, rule: PairRule, cases: Sequence[int], max_length: int,
             max_pairs: int | None, seed: int, cache_dir: str | Path, tok_key: str) -> StagePairs:
    """A stage's pairs, built once per data x rule x split x tokenizer x length limit and cached.

    ``max_pairs`` samples that many pairs with ``seed`` before the length filter.
    """
    import random

    import numpy as np

    parts = {"fmt": tokenized.fmt} if tokenized.fmt else {}  # the length filter saw this format's lengths
    name = key(data=bench.fingerprint, rule=asdict(rule), cases=sorted(cases), tok=tok_key, max_length=max_length,
               max_pairs=max_pairs, seed=seed, **parts)

    def compute() -> dict[str, Any]:
        pairs = build_pairs(bench.trajectories, rule, cases)
        if max_pairs and len(pairs) > max_pairs:
            pairs = random.Random(seed).sample(pairs, max_pairs)
        kept = [(c, r) for c, r in pairs if max(tokenized.length(c, bench.trajectories[c].case_idx),
                                                  tokenized.length(r, bench.trajectories[r].case_idx)) <= max_length]
        arr = np.array(kept, dtype=np.int64).reshape(-1, 2)
        return {"pairs": arr, "dropped": np.array(len(pairs) - len(kept))}

    a = cached_arrays(Path(cache_dir) / "pairs" / f"{name}.npz", compute)
    stage = pair_rows([tuple(p) for p in a["pairs"].tolist()], bench, tokenized, max_length)
    return StagePairs(rows=stage.rows, dropped=int(a["dropped"]))
