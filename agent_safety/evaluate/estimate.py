"""The offline estimate of a model's safety and helpfulness: an offline proxy, not ToolEmu.

For each test case every judged trajectory of that case is a candidate. Each candidate is weighted by
exp(log pi(y|x) - log pi_base(y|x)), self-normalised over the case's candidates, and the estimate is
the weighted mean of the candidates' judge scores, averaged over test cases. For the base model every
weight is equal, so its estimate is the plain mean. The study's own metric is generative ToolEmu
evaluation (the agent acts, an emulator answers, judges score); this proxy needs no generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent_safety.data.toolemu import Benchmark
from agent_safety.pairs.formatting import Tokenized
from agent_safety.pairs.rules import PairRule, build_pairs
from agent_safety.store.cache import cached_arrays, key


@dataclass
class Estimate:
    safety: float
    helpfulness: float
    pref_acc_safety: float | None
    pref_acc_helpfulness: float | None
    cases: list[int]
    case_safety: list[float]
    case_helpfulness: list[float]

    @property
    def n_test_cases(self) -> int:
        return len(self.cases)


def candidates(bench: Benchmark, test_cases: Sequence[int]) -> list[int]:
    """Indices of the trajectories that are candidates of the test cases."""
    keep = set(test_cases)
    return [i for i, t in enumerate(bench.trajectories) if t.case_idx in keep]


#: Logits turned to float32 at once when scoring: 64 MB, a few rows of a 128k vocabulary.
CHUNK_ELEMENTS = 1 << 24


def token_logps(logits: Any, targets: Any, chunk_elements: int = CHUNK_ELEMENTS) -> Any:
    """``log_softmax(logits)`` at ``targets`` (same leading shape), in float32, a chunk of positions at a time.

    The full float32 log-softmax would be batch x length x vocabulary: 34 GB at batch 8, 8k tokens and a
    128k vocabulary. Each chunk is its logit at the target minus its logsumexp.
    """
    import torch

    vocab = logits.shape[-1]
    rows = max(1, chunk_elements // vocab)
    flat_logits, flat_targets = logits.reshape(-1, vocab), targets.reshape(-1)  # views of contiguous tensors
    out = torch.empty(flat_targets.shape, dtype=torch.float32, device=logits.device)
    for start in range(0, flat_targets.numel(), rows):
        chunk = flat_logits[start:start + rows].float()
        picked = chunk.gather(-1, flat_targets[start:start + rows, None]).squeeze(-1)
        out[start:start + rows] = picked - torch.logsumexp(chunk, dim=-1)
    return out.view(targets.shape)


def sequence_logps(model: Any, tokenized: Tokenized, bench: Benchmark, indices: Sequence[int],
                   batch_size: int, max_length: int, desc: str = "log-probs", *,
                   pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log pi(y|x) over each candidate's completion tokens, and the number of those tokens.

    Sequences are sorted by length and padded per batch with ``pad_id`` (the tokenizer's); a candidate
    longer than ``max_length`` is scored on its first ``max_length`` tokens, the same for every model, so
    log-ratios stay comparable.
    """
    import torch

    from agent_safety.console import progress

    device = next(model.parameters()).device
    seqs = []
    for i in indices:
        p = tokenized.prompt_ids[bench.trajectories[i].case_idx]
        c = tokenized.completion_ids[i]
        seqs.append(((p + c)[:max_length], len(p)))
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]))
    logps = np.zeros(len(seqs))
    counts = np.zeros(len(seqs), dtype=np.int64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        bar = progress(len(order), desc, unit="seq")
        for start in range(0, len(order), batch_size):
            bar.update(min(batch_size, len(order) - start))
            batch = order[start:start + batch_size]
            width = max(len(seqs[k][0]) for k in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            comp = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, k in enumerate(batch):
                seq, plen = seqs[k]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
                comp[row, plen:len(seq)] = True
            ids, mask, comp = ids.to(device), mask.to(device), comp.to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            # position t predicts token t+1; the last position predicts nothing and is scored as padding
            token_logp = token_logps(logits, ids.roll(-1, dims=1))
            target = torch.zeros_like(comp)
            target[:, :-1] = comp[:, 1:]
            sums = torch.where(target, token_logp, 0.0).sum(-1).cpu().numpy()
            n = target.sum(-1).cpu().numpy()
            for row, k in enumerate(batch):
                logps[k], counts[k] = sums[row], n[row]
    bar.close()
    model.train(was_training)
    return logps, counts


def estimate(bench: Benchmark, indices: Sequence[int], logps: np.ndarray, base_logps: np.ndarray,
             n_tokens: np.ndarray, rules: dict[str, PairRule], per_token: bool = False,
             temperature: float = 1.0) -> Estimate:
    """Weighted judge scores per test case and held-out preference accuracy (pure)."""
    ratio = np.asarray(logps) - np.asarray(base_logps)
    if per_token:
        ratio = ratio / np.maximum(np.asarray(n_tokens), 1)
    ratio = ratio / temperature
    by_case: dict[int, list[int]] = {}
    for pos, i in enumerate(indices):
        by_case.setdefault(bench.trajectories[i].case_idx, []).append(pos)
    cases, case_s, case_h = [], [], []
    for case in sorted(by_case):
        pos = np.array(by_case[case])
        w = np.exp(ratio[pos] - ratio[pos].max())
        w /= w.sum()
        scores = [bench.trajectories[indices[p]].scores for p in pos]
        cases.append(case)
        case_s.append(float(w @ np.array([s["safety"] for s in scores])))
        case_h.append(float(w @ np.array([s["helpfulness"] for s in scores])))
    reward = dict(zip(indices, ratio, strict=True))
    sub = [bench.trajectories[i] for i in indices]
    acc: dict[str, float | None] = {}
    for metric, rule in rules.items():
        pairs = build_pairs(sub, rule)
        if not pairs:
            acc[metric] = None
            continue
        wins = [1.0 if reward[indices[c]] > reward[indices[r]] else 0.5 if reward[indices[c]] == reward[indices[r]]
                else 0.0 for c, r in pairs]
        acc[metric] = float(np.mean(wins))
    return Estimate(safety=float(np.mean(case_s)), helpfulness=float(np.mean(case_h)),
                    pref_acc_safety=acc.get("safety"), pref_acc_helpfulness=acc.get("helpfulness"),
                    cases=cases, case_safety=case_s, case_helpfulness=case_h)


def base_cache_path(cache_dir: str | Path, base_identity: str, bench: Benchmark, indices: Sequence[int],
                    max_length: int) -> Path:
    """Base log-probs are computed once per base model x data x split (x scoring length)."""
    name = key(base=base_identity, data=bench.fingerprint, idx=list(indices), max_length=max_length)
    return Path(cache_dir) / "base_logps" / f"{name}.npz"


def cached_base_logps(path: Path, compute: Any) -> tuple[np.ndarray, np.ndarray]:
    """Load the base log-probs from ``path`` or compute and store them atomically."""

    def arrays() -> dict[str, np.ndarray]:
        logps, n_tokens = compute()
        return {"logps": logps, "n_tokens": n_tokens}

    a = cached_arrays(path, arrays)
    return a["logps"], a["n_tokens"]


def as_record(est: Estimate) -> dict[str, Any]:
    out = asdict(est)
    out["n_test_cases"] = est.n_test_cases
    return out
