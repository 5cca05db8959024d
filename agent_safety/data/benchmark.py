"""Where a run's data comes from: the generated synthetic benchmark or a ToolEmu-layout folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_safety.data.fetch import fetch
from agent_safety.data.synthetic.generator import generate
from agent_safety.data.toolemu import Benchmark, load_benchmark
from agent_safety.store.cache import build_once

#: Bump when the synthetic generator's output changes, so cached copies are regenerated.
SYNTHETIC_VERSION = "3"


def synthetic_root(data_cfg: Any, cache_dir: str | Path) -> Path:
    """Generate the synthetic benchmark once per (size, seed, generator version) and reuse it."""
    if data_cfg.root:
        root = Path(data_cfg.root)
        if not (root / "assets" / "all_toolkits.json").exists():
            generate(root, n_cases=data_cfg.n_cases, seed=data_cfg.generator_seed, judge=data_cfg.judge)
        return root
    root = Path(cache_dir) / "data" / (f"synthetic-v{SYNTHETIC_VERSION}-n{data_cfg.n_cases}"
                                       f"-s{data_cfg.generator_seed}-{data_cfg.judge}")
    return build_once(root, lambda tmp: generate(tmp, n_cases=data_cfg.n_cases, seed=data_cfg.generator_seed,
                                                 judge=data_cfg.judge), marker=None)


def data_root(data_cfg: Any, cache_dir: str | Path) -> Path:
    if data_cfg.source == "synthetic":
        return synthetic_root(data_cfg, cache_dir)
    if not data_cfg.root:  # first use: fetch (or find in the cache) the study's data at the pinned commit
        return fetch()
    return Path(data_cfg.root)


def load_data(data_cfg: Any, cache_dir: str | Path) -> Benchmark:
    return load_benchmark(data_root(data_cfg, cache_dir), data_cfg.judge, on_error=data_cfg.on_error)


def load_configured(cfg: Any) -> tuple[Benchmark, Path]:
    """(benchmark, data root) of a composed config, exactly as a run loads them."""
    root = data_root(cfg.data, cfg.paths.cache_dir)  # fetches the study's data on first use
    return load_data(cfg.data, cfg.paths.cache_dir), root
