"""Scoring log-probs: the same sums as a full log-softmax, without a batch x length x vocabulary float32 copy."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from agent_safety.data.benchmark import load_data
from agent_safety.evaluate.estimate import candidates, sequence_logps, token_logps
from agent_safety.pairs.formatting import Tokenized, cached_tokenize
from agent_safety.train.models import load_model, load_tokenizer, resolve_base


def _full_log_softmax_logps(model, tokenized, bench, indices, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The formula sequence_logps used before: one sequence at a time, full float32 log-softmax."""
    logps, counts = [], []
    with torch.inference_mode():
        for i in indices:
            p = tokenized.prompt_ids[bench.trajectories[i].case_idx]
            seq = (p + tokenized.completion_ids[i])[:max_length]
            ids = torch.tensor([seq])
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            token_logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)[0]
            logps.append(float(token_logp[len(p) - 1:].sum()))
            counts.append(len(seq) - len(p))
    return np.array(logps), np.array(counts)


def test_sums_match_the_full_log_softmax_on_the_tiny_model(make_cfg) -> None:
    cfg = make_cfg("eval.max_cases=4")
    bench = load_data(cfg.data, cfg.paths.cache_dir)
    path, _ = resolve_base(cfg.model, bench, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(path, cfg.model)
    model = load_model(path, cfg.model)
    tokenized = cached_tokenize(tokenizer, bench, cfg.paths.cache_dir)
    indices = candidates(bench, [0, 1, 2, 3])
    lengths = [len(tokenized.prompt_ids[bench.trajectories[i].case_idx] + tokenized.completion_ids[i])
               for i in indices]
    max_length = int(np.median(lengths))  # some candidates truncated, batches of unequal lengths padded
    logps, counts = sequence_logps(model, tokenized, bench, indices, 3, max_length, pad_id=tokenizer.pad_token_id)
    want, want_counts = _full_log_softmax_logps(model, tokenized, bench, indices, max_length)
    assert len(set(lengths)) > 1 and (counts > 0).all()
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(logps, want, rtol=1e-5, atol=1e-5)


def test_token_logps_match_log_softmax_in_every_chunking() -> None:
    logits = torch.randn(3, 7, 50, dtype=torch.bfloat16)
    targets = torch.randint(0, 50, (3, 7))
    want = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    for chunk in (1, 50, 120, 10_000):  # a row per chunk, a few rows, everything at once
        torch.testing.assert_close(token_logps(logits, targets, chunk), want, rtol=1e-5, atol=1e-5)


class LargeAllocations(TorchDispatchMode):
    """Every new storage of at least ``min_bytes`` that an op returns (views share their input's storage)."""

    def __init__(self, min_bytes: int) -> None:
        super().__init__()
        self.min_bytes, self.seen, self.sizes = min_bytes, set(), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() >= self.min_bytes:
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.seen:
                    self.seen.add(ptr)
                    self.sizes.append((str(func), tuple(t.shape), t.dtype))
        return out


def test_large_vocabulary_allocates_no_log_softmax_beside_the_logits() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab, n, width, pad_id = 65536, 4, 256, 7
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512))
    rng = np.random.default_rng(0)
    tokenized = Tokenized(prompt_ids=[rng.integers(8, vocab, 40).tolist()],
                          completion_ids=[rng.integers(8, vocab, width - 40 - 9 * k).tolist() for k in range(n)])
    bench = type("Bench", (), {"trajectories": [type("T", (), {"case_idx": 0})() for _ in range(n)]})()
    seen_ids = []
    model.register_forward_pre_hook(lambda m, a, kw: seen_ids.append(kw["input_ids"].clone()), with_kwargs=True)
    logits_bytes = n * width * vocab * 4
    with LargeAllocations(logits_bytes // 2) as large:
        logps, counts = sequence_logps(model, tokenized, bench, list(range(n)), n, 512, pad_id=pad_id)
    # the logits themselves (the output head's matmul), and no second tensor of their size
    assert len(large.sizes) == 1 and large.sizes[0][1] == (n, width, vocab), large.sizes
    assert np.isfinite(logps).all() and counts.tolist() == [width - 40 - 9 * k for k in range(n)]
    (ids,) = seen_ids
    assert (ids[0, width - 27:] == pad_id).all()  # the shortest sequence is padded with the given id
