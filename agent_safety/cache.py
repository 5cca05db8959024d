"""Content-keyed caches under ``paths.cache_dir``: what a sweep of many runs computes once.

Tokenised benchmarks, pair sets and base-model log-probs are keyed by a hash of everything they depend
on, written atomically (so concurrent jobs never read half a file) and reused by every later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def key(**parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def tokenizer_key(tokenizer: Any) -> str:
    """What decides a tokenizer's output: its vocabulary, merges, specials and chat template."""
    state = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    return key(state=hashlib.sha256(state.encode()).hexdigest(), template=getattr(tokenizer, "chat_template", None),
               cls=type(tokenizer).__name__)


def cached_arrays(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load the arrays at ``path`` or compute and store them atomically."""
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return arrays


def ragged(lists: list[list[int]]) -> dict[str, np.ndarray]:
    """Flat values + offsets: a list of token-id lists as two arrays."""
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for x in lists for t in x), dtype=np.int32, count=int(offsets[-1]))
    return {"values": flat, "offsets": offsets}


def unragged(values: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
