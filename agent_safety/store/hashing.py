"""The one content hash of the project: sha256 of an object's canonical JSON.

Run ids, stage keys, eval ids, cache keys and the endpoint's response cache are all this hash of what
they depend on, so equal content gives an equal name in every process and on every machine. The text
hashed must never change: a changed byte renames every run and invalidates every cache.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(obj: Any, n: int | None = None, compact: bool = False) -> str:
    """Hex sha256 of ``obj`` as JSON with sorted keys (``str()`` of what JSON cannot hold), cut to ``n``
    characters. ``compact``: no spaces after separators, non-ASCII kept as UTF-8 (the response cache's text)."""
    if compact:
        text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(obj, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digest if n is None else digest[:n]
