"""Content-keyed caches under ``paths.cache_dir``: what a sweep of many runs computes once.

Tokenised benchmarks, pair sets and base-model log-probs are keyed by a hash of everything they depend
on, written atomically (so concurrent jobs never read half a file) and reused by every later run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agent_safety.store.hashing import content_hash

log = logging.getLogger(__name__)


def key(**parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (a cache file's name)."""
    return content_hash(parts, 20)


def tokenizer_key(tokenizer: Any) -> str:
    """What decides a tokenizer's output: its vocabulary, merges, specials and chat template."""
    state = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    return key(state=hashlib.sha256(state.encode()).hexdigest(), template=getattr(tokenizer, "chat_template", None),
               cls=type(tokenizer).__name__)


@contextmanager
def locked(lock_file: Path) -> Iterator[bool]:
    """Hold an exclusive file lock for the block; yields False where the file system cannot lock (the
    caller then goes on unshared: every write here is atomic anyway). A job that dies releases it."""
    from filelock import FileLock

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire()
    except OSError as e:
        log.warning("cannot lock %s (%s): going on without it", lock_file, e)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def building(target: Path) -> AbstractContextManager[bool]:
    """The lock that makes concurrent jobs build ``target`` once: a sweep's jobs start together, and the
    others wait here, then find it built."""
    return locked(target.parent / f".{target.name}.lock")


def build_once(target: Path, build: Callable[[Path], None], marker: str | None = "config.json") -> Path:
    """``target``, built by ``build(folder)`` the first time it is asked for and reused after.

    Concurrent jobs build it once (the others wait on :func:`building`, then find it); the build fills a
    temporary folder beside ``target`` that is renamed into place whole, so an interrupted build leaves
    nothing half-written. ``marker``: the file whose presence says the build is there (None: the folder)."""

    def done() -> bool:
        return (target / marker).exists() if marker else target.exists()

    if done():
        return target
    with building(target):
        if done():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            build(tmp)
            try:
                os.replace(tmp, target)
            except OSError:  # another job (without a lock, on some file systems) finished first
                if not done():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def cached_arrays(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load the arrays at ``path`` or compute them once (see ``building``) and store them atomically."""
    if path.exists():
        return _load(path)
    with building(path):
        if path.exists():
            return _load(path)
        return _store(path, compute())


def _store(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
