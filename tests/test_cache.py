"""Pair sets and tokenisations are built once and reused: a sweep of many runs pays for them once."""

from __future__ import annotations

import time
from pathlib import Path

from agent_safety.data.benchmark import load_data
from agent_safety.data.split import split_cases
from agent_safety.pairs.formatting import cached_tokenize, tokenize_benchmark
from agent_safety.pairs.rules import PairRule
from agent_safety.pairs.sets import pair_set
from agent_safety.store.cache import tokenizer_key
from agent_safety.train.models import load_tokenizer, resolve_base


def test_pair_set_and_tokenisation_cache_hits(make_cfg, cache_dir: Path) -> None:
    cfg = make_cfg()
    bench = load_data(cfg.data, cache_dir)
    path, _ = resolve_base(cfg.model, bench, cache_dir)
    tok = load_tokenizer(path, cfg.model)
    train, _ = split_cases(bench.n_cases, 0)
    rule = PairRule.from_config(cfg.objectives.safety)

    first = cached_tokenize(tok, bench, cache_dir)
    direct = tokenize_benchmark(tok, bench)
    assert first.completion_ids == direct.completion_ids and first.prompt_ids == direct.prompt_ids
    files = sorted((cache_dir / "tokenized").glob("*.npz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = cached_tokenize(tok, bench, cache_dir)
    assert again.completion_ids == first.completion_ids
    assert [f.stat().st_mtime_ns for f in sorted((cache_dir / "tokenized").glob("*.npz"))] == stamps

    args = (bench, first, rule, train, 1024, None, 0, cache_dir, tokenizer_key(tok))
    built = pair_set(*args)
    pair_files = {f: f.stat().st_mtime_ns for f in (cache_dir / "pairs").glob("*.npz")}
    t = time.perf_counter()
    hit = pair_set(*args)
    assert time.perf_counter() - t < 1.0
    assert hit.rows == built.rows and hit.dropped == built.dropped and len(built.rows) > 100
    assert {f: f.stat().st_mtime_ns for f in (cache_dir / "pairs").glob("*.npz")} == pair_files
    # a different rule or length limit is a different set
    shorter = pair_set(bench, first, rule, train, 600, None, 0, cache_dir, tokenizer_key(tok))
    assert shorter.dropped > built.dropped and len(shorter.rows) + shorter.dropped == len(built.rows) + built.dropped
    assert len(list((cache_dir / "pairs").glob("*.npz"))) == len(pair_files) + 1


def test_observation_masks_cover_exactly_the_tools_answers(make_cfg, cache_dir: Path) -> None:
    """With data.mask_observations the tokens of every observation, and only those, are left out of the loss; the
    masks survive the cache, and pair rows carry them."""
    cfg = make_cfg()
    bench = load_data(cfg.data, cache_dir)
    path, _ = resolve_base(cfg.model, bench, cache_dir)
    tok = load_tokenizer(path, cfg.model)
    plain = cached_tokenize(tok, bench, cache_dir, "agent")
    masked = cached_tokenize(tok, bench, cache_dir, "agent", mask_observations=True)
    assert plain.completion_masks is None and masked.completion_ids == plain.completion_ids
    assert masked.completion_masks == tokenize_benchmark(tok, bench, pair_format="agent",
                                                         mask_observations=True).completion_masks
    for i in (0, 5, 40):
        traj, ids, mask = bench.trajectories[i], masked.completion_ids[i], masked.completion_masks[i]
        assert len(mask) == len(ids)
        hidden = tok.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        kept = tok.decode([t for t, m in zip(ids, mask, strict=True) if m == 1])
        observations = [s.observation for s in traj.steps]
        assert all(o[3:-3] in hidden for o in observations)  # each answer (less its edge tokens) is masked
        assert "Action Input:" in kept and "Final Answer:" in kept and all(o not in kept for o in observations)
        assert kept.count("Observation:") == len(observations)  # the label that ends a turn still counts
    train, _ = split_cases(bench.n_cases, 0)
    rows = pair_set(bench, masked, PairRule.from_config(cfg.objectives.safety), train, 1024, None, 0, cache_dir,
                    tokenizer_key(tok)).rows
    assert rows and all(len(r["chosen_mask"]) == len(r["chosen_ids"]) for r in rows)
