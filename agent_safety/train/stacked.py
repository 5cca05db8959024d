"""Stage models as stacked LoRA adapters over the base model.

A stage's merge adds its ΔW = s·B·A to every adapted weight (s = alpha/r, or alpha/√r with rsLoRA), so the
model after stage k is exactly the base plus ΔW₁ + … + ΔWₖ. That sum is itself one LoRA product: the
stages' A matrices stacked (rank k·r) and their B matrices side by side, each stage's scaling folded into its
B, with alpha = rank so that the stacked adapter's own scaling is 1::

    A = [A₁; …; Aₖ]   B = [s₁B₁ … sₖBₖ]   B·A = Σ sᵢBᵢAᵢ

Written for every stage (``stage_<k>/stacked/``, stacked on stage k-1's), it lets one server holding the base
model once serve every stage of every run (vLLM ``--enable-lora``), and makes merged checkpoints optional
(``trainer.save_merged``): a stage's merged model is the base with its stacked adapter merged in. Tensors are
kept in float32 whatever the training dtype: the folded scalings are exact there, and the files stay small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_safety.records.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from agent_safety.store.io import replace_dir

#: The adapter kinds a stack can hold: plain LoRA on linear layers.
UNSUPPORTED = {"use_dora": "DoRA", "modules_to_save": "modules_to_save", "layers_to_transform": "layers_to_transform"}


def scaling(config: Mapping[str, Any], where: str) -> float:
    """The factor PEFT multiplies B·A by for this adapter (one rank and alpha for every module)."""
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{where}: per-module rank_pattern/alpha_pattern adapters cannot be stacked")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _module(key: str, where: str) -> tuple[str, str]:
    """``...q_proj.lora_A.weight`` -> (``...q_proj``, ``A``)."""
    for side in ("A", "B"):
        suffix = f".lora_{side}.weight"
        if key.endswith(suffix):
            return key[: -len(suffix)], side
    raise ValueError(f"{where}: tensor {key!r} is not a LoRA A or B matrix; only plain LoRA adapters stack")


def stack(parts: Sequence[tuple[Mapping[str, Any], float]], where: str = "adapters") -> dict[str, Any]:
    """One adapter's tensors equal to the sum of ``parts`` (each: tensors by PEFT key, scaling), at scaling 1.

    A module that one part leaves out gets zero blocks there (its ΔW is zero), so parts may adapt
    different modules; the rank is the sum of the parts' ranks."""
    import torch

    by_part = []
    for tensors, scale in parts:
        mods: dict[str, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            name, side = _module(key, where)
            mods.setdefault(name, {})[side] = tensor.to(torch.float32)
        ranks = {m["A"].shape[0] for m in mods.values()}
        if len(ranks) != 1 or any(set(m) != {"A", "B"} for m in mods.values()):
            raise ValueError(f"{where}: a part has modules of different ranks or a lone A or B matrix")
        by_part.append((mods, scale, ranks.pop()))
    names = sorted({name for mods, _, _ in by_part for name in mods})
    out = {}
    for name in names:
        shape_a = next(m[name]["A"].shape for m, _, _ in by_part if name in m)
        shape_b = next(m[name]["B"].shape for m, _, _ in by_part if name in m)
        a_blocks, b_blocks = [], []
        for mods, scale, r in by_part:
            m = mods.get(name)
            a_blocks.append(m["A"] if m else torch.zeros(r, shape_a[1]))
            b_blocks.append(m["B"] * scale if m else torch.zeros(shape_b[0], r))
        out[f"{name}.lora_A.weight"] = torch.cat(a_blocks, dim=0).contiguous()
        out[f"{name}.lora_B.weight"] = torch.cat(b_blocks, dim=1).contiguous()
    return out


def read_adapter(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, tensors) of a PEFT adapter folder, with one clear line when it is not one."""
    from safetensors.torch import load_file

    config_file, weights = Path(path) / ADAPTER_CONFIG, Path(path) / ADAPTER_WEIGHTS
    if not config_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{path}: not a LoRA adapter folder ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} needed)")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{config_file}: peft_type {config.get('peft_type')!r} is not LORA")
    for key, what in UNSUPPORTED.items():
        if config.get(key):
            raise ValueError(f"{config_file}: {what} adapters cannot be stacked")
    return config, load_file(str(weights))


def stacked_config(configs: Sequence[Mapping[str, Any]], rank: int) -> dict[str, Any]:
    """The first part's config at the stacked rank, scaling 1, every part's target modules."""
    config = dict(configs[0])
    targets: set[str] = set()
    for c in configs:
        t = c.get("target_modules") or []
        targets.update([t] if isinstance(t, str) else t)
    config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={}, lora_dropout=0.0,
                  target_modules=sorted(targets) if len(targets) > 1 else next(iter(targets), None))
    return config


def write_stacked(parts: Sequence[Path], out: Path) -> Path:
    """Write the adapter equal to the sum of the adapter folders ``parts`` to ``out`` (atomically)."""
    from safetensors.torch import save_file

    if not parts:
        raise ValueError(f"{out}: nothing to stack")
    read = [read_adapter(p) for p in parts]
    tensors = stack([(t, scaling(c, str(p))) for (c, t), p in zip(read, parts, strict=True)], where=str(out))
    rank = next(v.shape[0] for k, v in tensors.items() if k.endswith("lora_A.weight"))
    config = stacked_config([c for c, _ in read], rank)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    replace_dir(Path(out), write)
    return Path(out)


def merged_from_stacked(base: Any, stacked: Path) -> Any:
    """The stage's model: ``base`` (consumed) with the stacked adapter merged into its weights."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(stacked)).merge_and_unload()
