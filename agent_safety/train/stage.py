"""One stage: a DPO pass with a fresh LoRA adapter on the current model, merged afterwards.

The reference is the current model with the adapter disabled (TRL's behaviour for a PEFT model with
``ref_model=None``), so no second copy of the model is held. The merged model is what the next stage
starts from, which is how the study trained sequentially. On disk a stage is its adapter, the stacked adapter
of stages 1..k over the base (``train.stacked``), and, with ``trainer.save_merged``, the merged model.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agent_safety.pairs.sets import StagePairs
from agent_safety.store.io import atomic_write, read_json, replace_dir
from agent_safety.train.callbacks import FirstStep, PreemptionGuard
from agent_safety.train.models import use_bf16

log = logging.getLogger(__name__)

#: Beside each trainer checkpoint: the sum of the training loss over every step up to it. The Trainer's
#: ``train_loss`` covers only the steps of its own ``train()`` call, so a resumed stage (preempted, or killed
#: after its last step) would record the mean of the steps after the resume (0.0 with none left).
LOSS_FILE = "loss_sum.json"


def _trainer_class() -> type:
    from trl import DPOTrainer

    class PairTrainer(DPOTrainer):
        """DPOTrainer fed pre-tokenised pairs (tokenisation happened once, in the pair cache) that keeps the
        loss sum with each checkpoint (:data:`LOSS_FILE`)."""

        carried_loss: float = 0.0
        """The loss sum of the steps before the checkpoint this ``train()`` resumes from."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _save_checkpoint(self, model, trial) -> None:  # noqa: ANN001
            super()._save_checkpoint(model, trial)
            session, pending = getattr(self, "_total_loss_scalar", None), getattr(self, "_tr_loss", None)
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if session is None or pending is None or not folder.is_dir():  # another Trainer: no sum kept
                return
            total = self.carried_loss + float(session) + float(pending)
            atomic_write(folder / LOSS_FILE, json.dumps({"loss_sum": total, "global_step": self.state.global_step}))

    return PairTrainer


class OwnTokens:
    """TRL's preference collator with each pair's own completion mask (``chosen_mask``, ``rejected_mask``: the tokens
    the agent wrote), so the tools' observations inside a trajectory count in neither the DPO nor an SFT loss. Pairs
    never exceed ``max_length`` (longer ones are dropped), so the masks line up with the collated rows."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        masks = [ex["chosen_mask"] for ex in examples] + [ex["rejected_mask"] for ex in examples]
        starts = [len(ex["prompt_ids"]) for ex in examples] * 2
        out = self.inner([{k: v for k, v in ex.items() if not k.endswith("_mask")} for ex in examples])
        completion = out["completion_mask"]
        for row, (start, own) in enumerate(zip(starts, masks, strict=True)):
            end = min(start + len(own), completion.shape[1])
            completion[row, start:end] = torch.tensor(own[: end - start], dtype=completion.dtype)
        return out


def _loss_sum(checkpoint: str | None) -> dict[str, Any] | None:
    try:
        return read_json(Path(checkpoint) / LOSS_FILE) if checkpoint else None
    except ValueError:  # cut short by a kill: the loss is then not recorded
        return None


def whole_train_loss(session_loss: float | None, steps: int, resumed_from: str | None,
                     carried: dict[str, Any] | None) -> float | None:
    """The mean loss over all ``steps`` of the stage: the Trainer's mean over this call's steps, plus the
    sum ``carried`` with the checkpoint it resumed from. None when that sum is missing (never a wrong number)."""
    if resumed_from is None:
        return session_loss
    if not carried or session_loss is None or steps <= 0:
        log.warning("%s: no loss sum kept with the checkpoint: the stage's train_loss is not recorded", resumed_from)
        return None
    done_before = int(carried["global_step"])
    return (float(carried["loss_sum"]) + session_loss * (steps - done_before)) / steps


def dpo_args(trainer_cfg: DictConfig, output_dir: Path, epochs: float, seed: int, report_to: list[str],
             run_name: str) -> Any:
    from trl import DPOConfig

    t = trainer_cfg
    extra = OmegaConf.to_container(t.dpo, resolve=True) if t.dpo else {}
    return DPOConfig(
        output_dir=str(output_dir), beta=t.beta, learning_rate=t.learning_rate, num_train_epochs=epochs,
        max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler_type, optim=t.optim, max_grad_norm=t.max_grad_norm,
        max_length=t.max_length, bf16=use_bf16(t.bf16), gradient_checkpointing=t.gradient_checkpointing,
        precompute_ref_log_probs=t.precompute_ref_log_probs, logging_steps=t.logging_steps,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=1, seed=seed, data_seed=seed,
        report_to=report_to, run_name=run_name, disable_tqdm=True,  # callbacks.StepBar shows the steps
        dataloader_num_workers=0, remove_unused_columns=False, **extra,
    )


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete trainer checkpoint: the Trainer writes ``trainer_state.json`` last, so a job killed
    while saving leaves a folder without it (or with it cut short), and the one before is used."""
    for ckpt in sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(ckpt)
    return None


def train_stage(model: Any, tokenizer: Any, pairs: StagePairs, trainer_cfg: DictConfig, stage_dir: Path,
                epochs: float, seed: int, report_to: list[str], run_name: str,
                callbacks: Sequence[Any] = (), stack_below: Sequence[Path] | None = (),
                save_merged: bool = True) -> tuple[Any, dict[str, float | None]]:
    """Train one stage, save its adapter, its stacked adapter (on ``stack_below``, the earlier stages' adapters;
    None: none can be written) and, with ``save_merged``, its merged model; return the merged model (in memory
    either way: the next stage trains on it) and the train metrics.

    Resumes from the stage's latest trainer checkpoint when one exists (a preempted job).
    """
    from datasets import Dataset
    from peft import LoraConfig

    from agent_safety.train.stacked import write_stacked

    lora = trainer_cfg.lora
    target = lora.target_modules
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
        target_modules=target if isinstance(target, str) else list(target),
    )
    if not pairs.rows:
        raise ValueError(f"{stage_dir.name}: no training pairs left for this stage")
    output_dir = stage_dir / "trainer"
    args = dpo_args(trainer_cfg, output_dir, epochs, seed, report_to, run_name)
    guard = PreemptionGuard()
    trainer = _trainer_class()(
        model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(pairs.rows),
        processing_class=tokenizer, peft_config=peft_config,
        callbacks=[*callbacks, guard, FirstStep(stage_dir.name)],
    )
    if "chosen_mask" in pairs.rows[0]:
        trainer.data_collator = OwnTokens(trainer.data_collator)
    resume = latest_checkpoint(output_dir)
    carried = _loss_sum(resume)
    if resume:
        log.info("%s: resuming from %s", stage_dir.name, resume)
        trainer.carried_loss = float((carried or {}).get("loss_sum", 0.0))
    with guard:
        result = trainer.train(resume_from_checkpoint=resume)
    peft_model = trainer.model
    replace_dir(stage_dir / "adapter", lambda d: peft_model.save_pretrained(d))
    if stack_below is not None:
        write_stacked([*stack_below, stage_dir / "adapter"], stage_dir / "stacked")
    merged = peft_model.merge_and_unload()
    if save_merged or stack_below is None:
        replace_dir(stage_dir / "model", lambda d: (merged.save_pretrained(d, safe_serialization=True),
                                                      tokenizer.save_pretrained(d)))
    shutil.rmtree(output_dir, ignore_errors=True)  # trainer checkpoints only serve a preempted stage
    metrics: dict[str, float | None] = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    metrics["train_loss"] = whole_train_loss(metrics.get("train_loss"), trainer.state.global_step, resume, carried)
    return merged, metrics

