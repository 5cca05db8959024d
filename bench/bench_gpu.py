"""DPO at the study's size: Llama-3.1-8B's configuration with random weights, the framework against plain TRL.

Builds the model from its configuration (``from_config``, bf16 on a GPU: nothing downloaded), puts the preset's
LoRA on it (r 16, alpha 32, every linear layer) and trains DPO pairs whose chosen and rejected sequences are each
2k, 4k and 8k tokens long, one pair per step, with and without gradient checkpointing, two ways:

- ``framework``: ``agent_safety.train.stage.train_stage`` (pre-tokenised pairs, the trainer config's DPOConfig,
  adapter and stacked adapter written at the end; ``trainer.save_merged=false``: no 16 GB merged folder);
- ``trl``: a plain TRL script: text pairs, ``DPOTrainer`` tokenises them, the same hyperparameters.

Reports per setting the mean step time (after one warm-up step), tokens/s (both sequences of the pair),
model-FLOPs utilisation and peak memory. Model FLOPs per token are three forward passes' worth: the policy's
forward, its backward to the activations (the base weights are frozen: no weight gradients but LoRA's), and the
reference forward (the adapter disabled); a forward is 2·N FLOPs per token (N: parameters outside the embedding)
plus causal attention's 2·layers·seq·hidden. Recomputation under checkpointing is not counted (model, not hardware
FLOPs). MFU divides by the GPU's dense bf16 peak (``--peak-tflops``; H100/H200 SXM: 989). Each (way, checkpointing)
runs in a child process; a setting that runs out of memory is reported as OOM. The tokenizer is a word-level one
built here (one token per word), so the text pairs of the plain script are exactly the lengths asked for.

On a GPU (torch, transformers, peft, accelerate installed; TRL, hydra-core, omegaconf and this project
installed from wheels or source), the whole sweep runs in about 10 minutes::

    python bench/bench_gpu.py                          # 8B, 2k/4k/8k, 3 timed steps
    python bench/bench_gpu.py --shape cpu              # a reduced shape (2 layers, 256 wide, 128/256/512 tokens)

The measured GPU-hours per thousand pairs (printed last) are what ``model.gpu_hours_per_kpair`` guesses.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Llama-3.1-8B's configuration (meta-llama/Llama-3.1-8B-Instruct config.json), and a reduced one for CPUs.
SHAPES: dict[str, dict[str, Any]] = {
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "lengths": (2048, 4096, 8192)},
    "cpu": {"hidden_size": 256, "intermediate_size": 896, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 1, "vocab_size": 8192, "max_position_embeddings": 4096, "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "lengths": (128, 256, 512)},
}
H100_BF16_TFLOPS = 989.0


def build(shape: str, device: str) -> tuple[Any, Any]:
    """The model with random weights, in bf16 on a GPU (float32 on a CPU), and the word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    spec = {k: v for k, v in SHAPES[shape].items() if k != "lengths"}
    config = LlamaConfig(**spec, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, spec["vocab_size"])}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    return model, tok


def pairs(n: int, length: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    """``n`` pairs whose prompt + chosen and prompt + rejected are each ``length`` tokens (last one EOS)."""
    import random

    rng = random.Random(seed)
    half = length // 2

    def ids(k: int) -> list[int]:
        return [rng.randrange(4, vocab) for _ in range(k)]

    return [{"prompt_ids": ids(half), "chosen_ids": [*ids(length - half - 1), 1],
             "rejected_ids": [*ids(length - half - 1), 1]} for _ in range(n)]


def step_timer() -> Any:
    """A TrainerCallback recording each optimiser step's wall time (synchronising the GPU)."""
    import torch
    from transformers import TrainerCallback

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()


def trainer_cfg(length: int, steps: int, checkpointing: bool, device: str) -> Any:
    """The project's trainer config (the study's hyperparameters) at this length and step count."""
    from agent_safety.config.compose import compose

    bf16 = "true" if device == "cuda" else "false"
    return compose(["model=llama3.1-8b", f"trainer.max_length={length}", f"trainer.max_steps={steps}",
                    "trainer.per_device_train_batch_size=1", "trainer.gradient_accumulation_steps=1",
                    f"trainer.gradient_checkpointing={str(checkpointing).lower()}", f"trainer.bf16={bf16}",
                    "trainer.logging_steps=1000", "trainer.save_steps=100000", "trainer.save_merged=false",
                    "trainer.lora.dropout=0.0", "logger=none"]).trainer


def run_framework(model: Any, tok: Any, rows: list[dict], t: Any, timer: Any, out: Path) -> Any:
    from agent_safety.pairs.sets import StagePairs
    from agent_safety.train.stage import train_stage

    merged, _ = train_stage(model, tok, StagePairs(rows=rows, dropped=0), t, out / "stage_1", 1, 0, [], "bench",
                            callbacks=[timer], stack_below=[], save_merged=False)
    return merged


def run_trl(model: Any, tok: Any, rows: list[dict], t: Any, timer: Any, out: Path, device: str) -> Any:
    """What a researcher would write with TRL alone: text pairs in, DPOTrainer does the rest."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    def text(ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids if i != 1)

    data = Dataset.from_list([{"prompt": text(r["prompt_ids"]), "chosen": " " + text(r["chosen_ids"]),
                               "rejected": " " + text(r["rejected_ids"])} for r in rows])
    args = DPOConfig(output_dir=str(out / "trl"), beta=t.beta, learning_rate=t.learning_rate, max_steps=t.max_steps,
                     per_device_train_batch_size=1, gradient_accumulation_steps=1, max_length=t.max_length,
                     bf16=device == "cuda", gradient_checkpointing=t.gradient_checkpointing, save_strategy="no",
                     report_to=[], logging_steps=1000, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    lora = LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora,
                         callbacks=[timer])
    trainer.train()
    return trainer.model.unload()


def model_flops_per_token(shape: str, seq: int) -> float:
    """Three forward passes' worth per token (see the module docstring)."""
    s = SHAPES[shape]
    d, f, layers, heads, kv = (s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"],
                               s["num_attention_heads"], s["num_key_value_heads"])
    head = d // heads
    per_layer = d * d * 2 + 2 * d * kv * head + 3 * d * f  # q, o; k, v; gate, up, down
    n = layers * per_layer + d * s["vocab_size"]  # the lm_head, not the embedding lookup
    forward = 2 * n + 2 * layers * seq * d
    return 3.0 * forward


def peak_memory(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the process's peak so far (KiB -> GiB)


def child(way: str, checkpointing: bool, shape: str, steps: int) -> list[dict[str, Any]]:
    import torch

    from agent_safety.train.models import pick_device

    device = pick_device("auto")
    model, tok = build(shape, device)
    results = []
    for length in SHAPES[shape]["lengths"]:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        timer, t = step_timer(), trainer_cfg(length, steps + 1, checkpointing, device)
        rows = pairs(steps + 1, length, SHAPES[shape]["vocab_size"], seed=length)
        row: dict[str, Any] = {"way": way, "checkpointing": checkpointing, "length": length}
        try:
            with tempfile.TemporaryDirectory() as out:
                model = (run_framework(model, tok, rows, t, timer, Path(out)) if way == "framework"
                         else run_trl(model, tok, rows, t, timer, Path(out), device))
        except torch.OutOfMemoryError:
            results.append({**row, "oom": True})
            model = None
            torch.cuda.empty_cache()
            model, tok = build(shape, device)
            continue
        step = sum(timer.times[1:]) / max(1, len(timer.times) - 1)
        tokens = 2 * length
        row.update(step_s=step, tokens_per_s=tokens / step, peak_gib=peak_memory(device),
                   flops_per_step=tokens * model_flops_per_token(shape, length), steps=len(timer.times) - 1)
        results.append(row)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: 989 on a GPU)")
    p.add_argument("--child", nargs=2, metavar=("WAY", "CHECKPOINTING"))
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "true", args.shape, args.steps)))
        return
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for way in ("framework", "trl"):
        for ckpt in ("true", "false"):
            proc = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--steps", str(args.steps),
                                   "--child", way, ckpt], env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{way} checkpointing={ckpt} failed:\n{proc.stderr[-3000:]}")
            rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    peak = args.peak_tflops or (H100_BF16_TFLOPS if gpu else None)
    print(f"# {gpu or 'CPU'}; shape {args.shape}; {args.steps} timed steps of one pair; MFU against "
          f"{peak or '-'} TFLOPs")
    print(f"{'way':<10}{'ckpt':>5}{'tokens':>8}{'step s':>9}{'tok/s':>9}{'MFU':>7}{'peak GiB':>10}{'GPU-h/kpair':>13}")
    for r in rows:
        if r.get("oom"):
            print(f"{r['way']:<10}{str(r['checkpointing'])[0]:>5}{r['length']:>8}{'OOM':>9}")
            continue
        mfu = r["flops_per_step"] / r["step_s"] / (peak * 1e12) if peak else None
        print(f"{r['way']:<10}{str(r['checkpointing'])[0]:>5}{r['length']:>8}{r['step_s']:>9.3f}"
              f"{r['tokens_per_s']:>9.0f}{(f'{mfu:.1%}' if mfu else '-'):>7}{r['peak_gib']:>10.2f}"
              f"{r['step_s'] * 1000 / 3600:>13.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
