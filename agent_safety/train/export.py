"""``agent-safety export RUN --stage K``: a stage's merged model folder, written on demand.

With ``trainer.save_merged=false`` a run keeps each stage as adapters only; this writes the merged model
(the base with the stage's stacked adapter merged in, and the base's tokenizer) where tools that want a
plain checkpoint (``vllm serve``, transformers) can load it: ``RUN/stage_K/model`` unless ``--out`` says.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from agent_safety.records.rundir import RunDir
from agent_safety.store.io import replace_dir
from agent_safety.train.stacked import merged_from_stacked


def base_of(stacked: Path) -> str:
    """The base model the stacked adapter was trained over (PEFT records it in the adapter's config)."""
    base = json.loads((stacked / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or not Path(base).exists():
        raise FileNotFoundError(f"{stacked}/adapter_config.json: base_model_name_or_path {base!r} is not a folder "
                                "on this machine (the base model of the run)")
    return str(base)


def export_stage(run_dir: Path, stage: int, out: Path | None = None) -> Path:
    """Write stage ``stage``'s merged model (float weights as the run's ``model.dtype``) and tokenizer."""
    from agent_safety.train.models import load_model, load_tokenizer

    rd = RunDir(run_dir)
    if not (rd.root / "config.yaml").is_file():
        raise FileNotFoundError(f"{rd.root}: not a run dir (no config.yaml)")
    if not rd.has_stacked(stage):
        raise FileNotFoundError(f"{rd.stacked_dir(stage)}: stage {stage} has no stacked adapter to export")
    model_cfg = OmegaConf.create(rd.config()["model"])
    base = base_of(rd.stacked_dir(stage))
    merged = merged_from_stacked(load_model(base, model_cfg), rd.stacked_dir(stage))
    tokenizer = load_tokenizer(base, model_cfg)
    target = Path(out) if out else rd.model_dir(stage)
    replace_dir(target, lambda d: (merged.save_pretrained(d, safe_serialization=True), tokenizer.save_pretrained(d)))
    return target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a stage's merged model from its stacked adapter",
                       description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the run dir (runs/<group>/<run_id>)")
    p.add_argument("--stage", type=int, required=True, help="the stage (from 1)")
    p.add_argument("--out", type=Path, default=None, help="where to write it (default RUN/stage_K/model)")
    p.set_defaults(func=lambda a: print(export_stage(a.run, a.stage, a.out)))
