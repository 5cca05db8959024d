"""Loading base models (hub checkpoints or the offline tiny model) and stage checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agent_safety.config.schema import TinyConfig
from agent_safety.data.toolemu import Benchmark
from agent_safety.pairs.formatting import completion_messages, prompt_messages

DTYPES = ("auto", "bfloat16", "float16", "float32")


def corpus(bench: Benchmark) -> list[str]:
    """The data's own text, to train the tiny tokenizer on."""
    seen: set[int] = set()
    texts = []
    for t in bench.trajectories:
        if t.case_idx not in seen:
            seen.add(t.case_idx)
            texts.extend(m["content"] for m in prompt_messages(bench.cases[t.case_idx], bench.toolkits))
        texts.extend(m["content"] for m in completion_messages(t))
    return texts


def resolve_base(model_cfg: DictConfig, bench: Benchmark, cache_dir: str | Path) -> tuple[str, str]:
    """(path to load, identity for cache keys) of the base model; builds the tiny model if needed."""
    if model_cfg.source == "tiny":
        from agent_safety.train.tiny import build_tiny

        tiny = TinyConfig(**OmegaConf.to_container(model_cfg.tiny, resolve=True))
        path = build_tiny(tiny, corpus(bench), cache_dir)
        return str(path), path.name
    path = str(model_cfg.path)
    if os.path.isdir(path):
        config = Path(path, "config.json")
        ident = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config.exists() else "local"
        return path, f"{Path(path).name}-{ident}"
    return path, path.replace("/", "__")


def resolve_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    return getattr(torch, name)


def use_bf16(setting: str) -> bool:
    """``auto``: bf16 where the hardware supports it (a CUDA device that has it)."""
    import torch

    if str(setting).lower() in ("true", "1", "yes"):
        return True
    if str(setting).lower() == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def load_tokenizer(path: str, model_cfg: DictConfig) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, model_cfg: DictConfig, device: str = "cpu") -> Any:
    """A causal LM from a hub id or folder, with the model config's dtype, attention and quantisation."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": resolve_dtype(model_cfg.dtype),
                              "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.load_in_4bit or model_cfg.load_in_8bit:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=bool(model_cfg.load_in_4bit), load_in_8bit=bool(model_cfg.load_in_8bit),
            bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    return model


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel at once.

    A CPU training step allocates and frees activations of tens of MB; by default glibc maps each one
    afresh and unmaps it on free, so every step faults all of its pages in again (measured on the tiny
    preset: a third of a run's time was spent in the kernel). Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 2**30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def pick_device(setting: str) -> str:
    import torch

    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"
