"""DPO step time of a framework stage against a plain TRL script, side by side, as ratios.

Every variant trains the same tiny model on the same synthetic pairs with the same hyperparameters, in
its own child process (so peak memory is per variant), one after the other:

- ``trl``: a plain TRL script: conversational pairs tokenised by DPOTrainer, reference log-probs from
  the adapter-disabled model at every step;
- ``framework``: the default: ``agent_safety.train.stage.train_stage`` fed pre-tokenised pairs, reference
  log-probs at every step, glibc keeping freed memory (``agent_safety.train.models.keep_freed_memory``, as every
  CPU run does);
- ``framework-malloc-default``: the same with glibc's default (each step's activations mapped afresh);
- ``framework-precompute``: the default with the reference log-probs of all pairs computed before step 1;
- ``bare``: only loads the model and runs one forward pass (the memory floor of a LoRA run).

Usage: ``python bench/bench_dpo.py [--steps 24] [--pairs 96]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
VARIANTS = ("bare", "trl", "framework-malloc-default", "framework-precompute", "framework")


def _setup(cache: str, pairs_n: int):
    from conftest import compose

    from agent_safety.data.benchmark import load_data
    from agent_safety.data.split import split_cases
    from agent_safety.pairs.formatting import completion_messages, prompt_messages, tokenize_benchmark
    from agent_safety.pairs.rules import PairRule, build_pairs
    from agent_safety.train.models import load_model, load_tokenizer, resolve_base

    cfg = compose([f"paths.cache_dir={cache}", "logger=none"])
    bench = load_data(cfg.data, cache)
    train, _ = split_cases(bench.n_cases, 0)
    pairs = build_pairs(bench.trajectories, PairRule.from_config(cfg.objectives.safety), train)[:pairs_n]
    path, _ = resolve_base(cfg.model, bench, cache)
    tok = load_tokenizer(path, cfg.model)
    helpers = {"tokenize": lambda: tokenize_benchmark(tok, bench), "prompt": prompt_messages,
               "completion": completion_messages}
    return cfg, bench, pairs, tok, load_model(path, cfg.model), helpers


def child(variant: str, steps: int, pairs_n: int, cache: str) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    cfg, bench, pairs, tok, model, helpers = _setup(cache, pairs_n)
    out: dict = {"variant": variant}
    if variant == "bare":
        with torch.no_grad():
            model(input_ids=torch.arange(2, 514)[None])
    else:
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.trainer.max_steps = steps
            cfg.trainer.logging_steps = steps
            cfg.trainer.save_steps = 10 * steps
            cfg.trainer.precompute_ref_log_probs = variant == "framework-precompute"
        if variant in ("framework", "framework-precompute"):
            from agent_safety.train.models import keep_freed_memory

            keep_freed_memory()
        start = time.perf_counter()
        if variant == "trl":
            out.update(_plain_trl(cfg, bench, pairs, tok, model, helpers, Path(tempfile.mkdtemp())))
        else:
            from agent_safety.pairs.sets import pair_rows
            from agent_safety.train.stage import train_stage

            rows = pair_rows(pairs, bench, helpers["tokenize"](), cfg.trainer.max_length)
            _, metrics = train_stage(model, tok, rows, cfg.trainer, Path(tempfile.mkdtemp()) / "stage", 1, 0, [],
                                     "bench")
            out["train_runtime"] = metrics["train_runtime"]
        out["total_s"] = time.perf_counter() - start
        out["step_s"] = out["train_runtime"] / steps
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _plain_trl(cfg, bench, pairs, tok, model, helpers, out_dir: Path) -> dict:
    """What a researcher would write with TRL alone: messages in, DPOTrainer does the rest."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    t = cfg.trainer
    rows = []
    for c, r in pairs:
        case = bench.cases[bench.trajectories[c].case_idx]
        rows.append({"prompt": helpers["prompt"](case, bench.toolkits),
                     "chosen": helpers["completion"](bench.trajectories[c]),
                     "rejected": helpers["completion"](bench.trajectories[r])})
    args = DPOConfig(
        output_dir=str(out_dir), beta=t.beta, learning_rate=t.learning_rate, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler_type, optim=t.optim, max_grad_norm=t.max_grad_norm, max_length=t.max_length,
        bf16=False, gradient_checkpointing=False, logging_steps=t.logging_steps, save_strategy="no", report_to=[],
        seed=0, disable_tqdm=True, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora)
    result = trainer.train()
    return {"train_runtime": result.metrics["train_runtime"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--pairs", type=int, default=96)
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--cache", default=None)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(child(args.variant, args.steps, args.pairs, args.cache)))
        return
    cache = args.cache or tempfile.mkdtemp(prefix="bench-cache-")
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    # warm the cache (tiny model, synthetic data) so no variant pays for building them
    subprocess.run([sys.executable, __file__, "--variant", "bare", "--cache", cache], env=env, check=True,
                   capture_output=True)
    results = {}
    for variant in VARIANTS:
        proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--steps", str(args.steps),
                               "--pairs", str(args.pairs), "--cache", cache], env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    trl = results["trl"]
    print(f"DPO on the tiny model, {args.pairs} pairs, {args.steps} steps, torch threads "
          f"{env.get('BENCH_THREADS', '2')}")
    print(f"{'variant':<26} {'step s':>8} {'ratio':>6} {'stage s':>8} {'ratio':>6} {'peak MB':>8}")
    for name in VARIANTS[1:]:
        r = results[name]
        print(f"{name:<26} {r['step_s']:>8.3f} {r['step_s'] / trl['step_s']:>6.2f} {r['total_s']:>8.1f} "
              f"{r['total_s'] / trl['total_s']:>6.2f} {r['peak_rss_mb']:>8.0f}")
    bare = results["bare"]["peak_rss_mb"]
    print(f"peak memory: bare model {bare:.0f} MB; LoRA DPO run (framework) "
          f"{results['framework']['peak_rss_mb']:.0f} MB = {results['framework']['peak_rss_mb'] / bare:.2f}x")


if __name__ == "__main__":
    main()
