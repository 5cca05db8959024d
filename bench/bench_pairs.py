"""Benchmark of the study's pair sets: every pair set for both judges, built from scratch.

Goal (2-core CPU): loading both judges' data and building the pairs of the 3 objectives over all cases and
over seed 0's train and test splits takes < 10 s. For information, it also times extracting the shared
archive and tokenising one judge's data with the tiny model's tokenizer.

    python bench/bench_pairs.py [--archive PATH | --root DIR] [--repeat 3] [--no-tokenize]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "toolemu" / "upstream-data.tar.xz"
JUDGES = ("gpt5m", "q32")
OBJECTIVES = {"safety": ("safety",), "helpfulness": ("helpfulness",), "both": ("safety", "helpfulness")}
GOAL_S = 10.0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def build_all(root: Path, seed: int = 0) -> dict[str, dict[str, dict[str, int]]]:
    """Load both judges and build all 3 objectives x {all, train, test} pair sets; return their sizes."""
    from agent_safety.data.split import split_cases
    from agent_safety.data.toolemu import load_benchmark
    from agent_safety.pairs.rules import PairRule, build_pairs

    counts: dict[str, dict[str, dict[str, int]]] = {}
    for judge in JUDGES:
        bench = load_benchmark(root, judge)
        train, test = split_cases(bench.n_cases, seed)
        counts[judge] = {
            name: {split: len(build_pairs(bench.trajectories, PairRule(metrics), cases))
                   for split, cases in (("all", None), ("train", train), ("test", test))}
            for name, metrics in OBJECTIVES.items()}
    return counts


def bench_tokenize(root: Path, cache_dir: Path) -> None:
    """Tiny tokenizer on one judge's data (information only: it is done once per run, not per pair set)."""
    from omegaconf import OmegaConf

    from agent_safety.config.schema import ModelConfig
    from agent_safety.data.toolemu import load_benchmark
    from agent_safety.pairs.formatting import tokenize_benchmark
    from agent_safety.train.models import load_tokenizer, resolve_base

    bench = load_benchmark(root, JUDGES[0])
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "tiny", "source": "tiny"})
    build_s, (path, _) = timed(lambda: resolve_base(model_cfg, bench, cache_dir))
    tokenizer = load_tokenizer(path, model_cfg)
    tok_s, tokenized = timed(lambda: tokenize_benchmark(tokenizer, bench))
    n_tokens = sum(map(len, tokenized.completion_ids)) + sum(map(len, tokenized.prompt_ids.values()))
    print(f"tiny model build ({JUDGES[0]}, includes tokenizer training): {build_s:.2f} s")
    print(f"tokenize_benchmark, tiny tokenizer, {JUDGES[0]}: {tok_s:.2f} s for {len(bench.trajectories):,} "
          f"trajectories + {len(tokenized.prompt_ids)} prompts ({n_tokens:,} tokens)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--archive", type=Path, default=ARCHIVE, help="the shared archive (default: ../shared)")
    src.add_argument("--root", type=Path, help="an already extracted root (skips the extraction)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N builds")
    parser.add_argument("--no-tokenize", action="store_true", help="skip the tiny-tokenizer timing")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pairs-") as tmp:
        root = args.root
        if root is None:
            if not args.archive.exists():
                print(f"{args.archive} is absent: pass --archive or --root", file=sys.stderr)
                return 2
            from agent_safety.data.fetch import fetch

            fetch_s, root = timed(lambda: fetch(cache_dir=Path(tmp), archive=args.archive, progress=False))
            print(f"fetch --archive (extract + verify 1,624 files): {fetch_s:.2f} s")
        times = []
        for _ in range(args.repeat):
            seconds, counts = timed(lambda: build_all(root))
            times.append(seconds)
        for judge, objectives in counts.items():
            print(f"{judge}: " + "; ".join(f"{name} {c['all']:,} (train {c['train']:,}, test {c['test']:,})"
                                          for name, c in objectives.items()))
        best = min(times)
        verdict = "OK" if best < GOAL_S else "OVER GOAL"
        print(f"every pair set, both judges, from scratch (load + 3 objectives x all/train/test): "
              f"{best:.2f} s best of {args.repeat} (goal < {GOAL_S:.0f} s: {verdict})")
        if not args.no_tokenize:
            bench_tokenize(root, Path(tmp) / "cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
