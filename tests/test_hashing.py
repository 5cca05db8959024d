"""The content hash names caches on disk: these pins fail on any byte that would orphan a user's caches.

(Run ids, stage keys and eval ids are pinned in test_identity.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import OmegaConf

from agent_safety.config.schema import EndpointConfig, TinyConfig
from agent_safety.evaluate.generative.client import ChatRequest, Endpoint
from agent_safety.store.cache import key
from agent_safety.store.hashing import content_hash
from agent_safety.train.tiny import tiny_key


def test_cache_key_is_pinned() -> None:
    assert key(data="fp", tok="t", fmt={"a": [1, 2.5], "b": None}) == "0384f99f1a455f5445b8"


def test_tiny_model_key_is_pinned() -> None:
    """Moves only when the build changes (``tiny.RECIPE_VERSION`` is part of the key: recipe 4 here)."""
    assert tiny_key(TinyConfig(), "corpus-digest", "examples-digest") == "512ac9712d0c13b2"


def test_response_cache_key_is_pinned_with_non_ascii_text(tmp_path: Path) -> None:
    conf = OmegaConf.structured(dataclasses.replace(EndpointConfig(), base_url="http://127.0.0.1:9/v1", model="tiny"))
    request = ChatRequest([{"role": "user", "content": "Lösche die Dateien — «alle»?"}], temperature=0.7,
                          max_tokens=64, stop=["\nObservation:"], replicate=2)
    assert Endpoint(conf, tmp_path, "judge").cache_key(request) == \
        "0b414e63bbebf19417371b7b831233e4cd8e24227ccfcbd1370a0382ca4065f1"


def test_key_order_does_not_matter_and_content_does() -> None:
    assert content_hash({"a": 1, "b": [2, 3]}, 12) == content_hash({"b": [2, 3], "a": 1}, 12)
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert len(content_hash({"a": 1})) == 64
