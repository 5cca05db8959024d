"""Behaviour-cloning step time of the tiny agent's build with TRL's loss against the completion-only loss, side by
side, as a ratio.

Both variants train the same freshly initialised tiny model (the ``tiny_agent`` preset's shape and tokenizer) on
the same cloning examples with the same settings, in this process, alternately (``--rounds`` each):

- ``trl``: TRL's ``SFTTrainer`` as it is: off Triton devices its fused LM head projects every position;
- ``completion``: ``model.tiny.agent_loss=completion`` (``agent_safety.train.tiny._completion_trainer``): only
  the completion's positions go through the LM head.

Usage: ``python bench/bench_cloning.py [--steps 40] [--rounds 2] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from conftest import compose
    from datasets import Dataset
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer, LlamaForCausalLM

    from agent_safety.train.tiny import _trainer, agent_examples, build_tiny, sft_args

    torch.set_num_threads(a.threads)
    cfg = dataclasses.replace(OmegaConf.to_object(compose(["model=tiny_agent"]).model.tiny), agent_cases=48)
    examples = agent_examples(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = [m["content"] for ex in examples for m in ex["prompt"] + ex["completion"]]
        path = build_tiny(dataclasses.replace(cfg, agent_steps=0, induction_init=False), corpus, tmp)
        tok = AutoTokenizer.from_pretrained(path)
        data = Dataset.from_list(examples)
        trainers = {name: _trainer(name) for name in ("trl", "completion")}
        times: dict[str, list[float]] = {k: [] for k in trainers}
        losses: dict[str, float] = {}
        for _ in range(a.rounds):
            for name, cls in trainers.items():
                args = sft_args(dataclasses.replace(cfg, agent_steps=a.steps), Path(tmp) / name)
                torch.manual_seed(0)
                trainer = cls(model=LlamaForCausalLM.from_pretrained(path), args=args, train_dataset=data,
                              processing_class=tok)
                start = time.perf_counter()
                losses[name] = trainer.train().training_loss
                times[name].append(time.perf_counter() - start)
    rate = {k: a.steps / statistics.median(v) for k, v in times.items()}
    print(json.dumps({"steps": a.steps, "threads": a.threads, "steps_per_s": {k: round(v, 2) for k, v in rate.items()},
                      "speedup": round(rate["completion"] / rate["trl"], 2),
                      "train_loss": {k: round(v, 4) for k, v in losses.items()}}))


if __name__ == "__main__":
    main()
