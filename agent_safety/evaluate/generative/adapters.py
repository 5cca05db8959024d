"""Stages served as LoRA adapters by one OpenAI-compatible server (vLLM ``--enable-lora``).

With ``eval.agent.adapters=true`` the ``openai`` agent backend asks the server to load the stage's stacked
adapter (``train.stacked``: stages 1..k over the base model) under a name of its own, then names it as the
request's model; the base model (stage 0) is the endpoint's ``model``. One server holding the base model once
serves every stage of every run of a sweep. The name carries a hash of the adapter's weights, so a retrained
stage never answers from cached responses of the old one, and runs that share a stage share its answers.
The server reads the adapter from its path: it must see the same file system (vLLM needs
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` for ``/v1/load_lora_adapter``).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

from agent_safety.records.rundir import ADAPTER_WEIGHTS


def adapter_name(path: str | Path, stage: int) -> str:
    """``stage<k>-<12 hex of the adapter's weights>``: one name per adapter content."""
    digest = hashlib.sha256()
    with open(Path(path) / ADAPTER_WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"stage{stage}-{digest.hexdigest()[:12]}"


def load_adapter(base_url: str, name: str, path: str | Path, api_key: str, timeout_s: float = 120.0) -> None:
    """Make the server serve the adapter folder ``path`` as model ``name`` (already loaded: fine)."""
    body = json.dumps({"lora_name": name, "lora_path": str(Path(path).resolve())}).encode()
    url = f"{base_url.rstrip('/')}/load_lora_adapter"
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        if e.code == 400 and "already" in text.lower():
            return
        hint = " (does it run with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)" if e.code == 404 else ""
        raise ConnectionError(f"{url}: loading adapter {name} from {path} failed: HTTP {e.code} "
                              f"{text[:300]}{hint}") from None
    except OSError as e:
        raise ConnectionError(f"{url}: loading adapter {name} failed: {e}") from None
