"""A real small causal LM built fully offline: a BPE tokenizer trained on the data's own text and a
Llama-architecture model, randomly initialised and then, when ``agent_cases`` and ``agent_steps`` are set,
taught to act by behaviour cloning; cached by the hash of everything that defines them.

Behaviour cloning is supervised fine-tuning (TRL's ``SFTTrainer``) on the synthetic world's trajectories, one
example per agent turn in exactly the form the generative evaluation asks for it: the prompt is the agent
prompt (``Prompts.agent``) with the scratchpad of the earlier turns, the completion that turn's text (up to
its Action Input, or its Final Answer), and the loss is on the completion only. The cases are a block the
benchmark never uses (indices from ``AGENT_CASE_OFFSET``: no seed's split reaches them), so the same toolkits
and templates with other items and hazards; each case is acted out by every simulated agent with the
benchmark's own behaviour assignment, so the clone is a mixture of the six behaviours as the study's base
models were.

With ``induction_init`` the random initialisation first gets a copying circuit (``train/induction.py``), kept
through the cloning, so that the agent can copy what its context shows (keywords, paths, names).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent_safety.agent.episode import Episode, Step
from agent_safety.agent.prompts import Prompts
from agent_safety.config.schema import AgentConfig, TinyConfig
from agent_safety.data.synthetic import generator as gen
from agent_safety.data.synthetic.world import build_scenario, case_record, toolkit_specs
from agent_safety.store.cache import build_once
from agent_safety.store.hashing import content_hash
from agent_safety.train import induction
from agent_safety.train.induction import CONSTANTS

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
#: Bump when the build recipe changes, so old cached builds are not reused.
RECIPE_VERSION = "4"
CORPUS_CHAR_LIMIT = 8_000_000
#: First case index of the behaviour-cloning block: far past any benchmark's ``n_cases``, so in no test split.
AGENT_CASE_OFFSET = 100_000
#: The cloned base agents act in one call wherever the tools allow it (the lookup's filters, a folder, a glob):
#: words copied from the request, which a tiny model does reliably; one call per item means picking ids out of a
#: listing, which it does not.
BASE_BULK = 1.0
Example = dict[str, list[dict[str, str]]]


def tiny_key(cfg: TinyConfig, corpus_digest: str, examples_digest: str = "") -> str:
    """Content hash of a tiny model: its shape, init seed, tokenizer corpus, cloning data and recipe."""
    payload = {"cfg": asdict(cfg), "corpus": corpus_digest, "template": CHAT_TEMPLATE, "specials": SPECIAL_TOKENS,
               "recipe": RECIPE_VERSION}
    if examples_digest:
        payload["examples"] = examples_digest
    if cfg.induction_init:
        payload["induction"] = CONSTANTS
    return content_hash(payload, 16)


def clones(cfg: TinyConfig) -> bool:
    return cfg.agent_cases > 0 and cfg.agent_steps > 0


def agent_examples(cfg: TinyConfig) -> list[Example]:
    """One prompt-completion example per turn of every simulated agent on the cloning block's cases.

    The scratchpad is built by ``Episode.scratchpad`` from the generated steps, and the observations are the
    generator's, which the rule emulator also answers with: the prompts are the ones a rollout would render.
    The prompt's settings are the schema's (``AgentConfig``): a run that changes ``eval.agent.user_name`` and
    the like shows the agent a setting it was not cloned on.
    """
    prompts, settings = Prompts.load(cfg.agent_template), AgentConfig()
    kits = {k["toolkit"]: k for k in toolkit_specs()}
    examples: list[Example] = []
    for idx in range(AGENT_CASE_OFFSET, AGENT_CASE_OFFSET + cfg.agent_cases):
        sc = build_scenario(idx, cfg.agent_seed)
        case = case_record(idx, sc)
        toolkits = [kits[name] for name in case["Toolkits"]]
        draw = random.Random(f"tiny-agents/{cfg.agent_seed}/{idx}")
        for a in sorted(draw.sample(range(len(gen.AGENTS)), min(cfg.agent_agents, len(gen.AGENTS)))):
            agent = dataclasses.replace(gen.AGENTS[a], bulk=BASE_BULK)
            behaviour, hasty = gen.base_behaviour(sc, idx, a, cfg.agent_seed)
            if cfg.agent_look_first:
                hasty = False
            rng = random.Random(f"tiny-agent/{cfg.agent_seed}/{idx}/{agent.name}")
            steps, thought, answer = gen.trajectory_steps(sc, agent, behaviour, rng, hasty)
            episode = Episode(idx, case)
            for log, tool, tool_input, observation in steps:
                examples.append(_example(prompts.agent(case, toolkits, episode.scratchpad(), settings), log.rstrip()))
                episode.steps.append(Step(log, tool, tool_input, observation))
            final = f"{thought}\nFinal Answer: {answer}"
            examples.append(_example(prompts.agent(case, toolkits, episode.scratchpad(), settings), final))
    return examples


def _example(prompt: list[dict[str, str]], completion: str) -> Example:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}


def _example_texts(examples: list[Example]) -> list[str]:
    """The cloning data's text for the tokenizer: every distinct prompt message and every completion."""
    seen: set[str] = set()
    texts = []
    for ex in examples:
        for m in ex["prompt"] + ex["completion"]:
            if m["content"] not in seen:
                seen.add(m["content"])
                texts.append(m["content"])
    return texts


def _train_tokenizer(texts: Iterable[str], vocab_size: int, whole_numbers: bool = False):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if whole_numbers:
        tok.add_tokens([AddedToken(str(n), normalized=False) for n in range(1000, 10_000)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|end|>",
                                   pad_token="<|pad|>", chat_template=CHAT_TEMPLATE)


def build_tiny(cfg: TinyConfig, corpus: list[str], cache_dir: str | Path) -> Path:
    """Return the folder of the tiny model for this corpus, built once per cache (``build_once``: under a lock,
    renamed into place whole)."""
    examples = agent_examples(cfg) if clones(cfg) else []
    budget, texts = CORPUS_CHAR_LIMIT, []
    for t in [*_example_texts(examples), *corpus]:  # deterministic prefix: tokenizer training time stays bounded
        if budget <= 0:
            break
        texts.append(t[:budget])
        budget -= len(t)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    examples_digest = hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest() if examples else ""
    target = Path(cache_dir) / "models" / f"tiny-{tiny_key(cfg, digest, examples_digest)}"

    def build(tmp: Path) -> None:
        from agent_safety.console import say

        what = (f"agent once into {target}: a tokenizer, then {cfg.agent_steps} behaviour-cloning steps (minutes "
                "on a CPU)") if examples else f"model once into {target}: a tokenizer and a random model (seconds)"
        say(f"building the tiny {what}; every later run with this recipe reuses it", err=True)  # stdout: results
        with _own_rng(), _every_core():
            _build(cfg, texts, examples, tmp)

    return build_once(target, build)


@contextmanager
def _own_rng() -> Iterator[None]:
    """The build seeds what it uses; the caller's random streams come out as they went in, so a run that
    builds the model and one that finds it cached go on identically."""
    import numpy as np
    import torch

    py, nps = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(nps)


@contextmanager
def _every_core() -> Iterator[None]:
    """Build on every core this process may use, then give the job back its share: in a sweep the other jobs
    wait on the build's lock, so the one building would otherwise leave the machine idle on its one thread."""
    import torch

    share = torch.get_num_threads()
    torch.set_num_threads(_usable_cores())
    try:
        yield
    finally:
        torch.set_num_threads(share)


def _usable_cores() -> int:
    """The cores this process may run on (its affinity on Linux, where SLURM and taskset set it; else all)."""
    if hasattr(os, "sched_getaffinity"):  # not on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _build(cfg: TinyConfig, texts: list[str], examples: list[Example], out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(texts, cfg.vocab_size, cfg.whole_numbers)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, rope_theta=cfg.rope_theta,
    )
    torch.manual_seed(cfg.init_seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.induction_init:
        induction.install(model, cfg.init_seed)
        if examples:
            hooks = induction.protect(model, _number_tokens(tokenizer) if cfg.copy_numbers else ())
            model = _clone(model, tokenizer, examples, cfg, out / ".sft")
            induction.release(model, hooks)
    elif examples:
        model = _clone(model, tokenizer, examples, cfg, out / ".sft")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _number_tokens(tokenizer: Any) -> list[int]:
    """Ids of the tokens that are a number of three digits or more (with or without a leading space)."""
    return [i for t, i in tokenizer.get_vocab().items()
            if len(n := tokenizer.convert_tokens_to_string([t]).strip()) >= 3 and n.isdigit()]


def sft_args(cfg: TinyConfig, work: Path) -> Any:
    """The cloning's ``SFTConfig``: deterministic on CPU, loss on the completion only, nothing saved."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(work), max_steps=cfg.agent_steps, per_device_train_batch_size=cfg.agent_batch_size,
        gradient_accumulation_steps=1, learning_rate=cfg.agent_learning_rate, lr_scheduler_type="cosine",
        warmup_steps=cfg.agent_warmup, weight_decay=0.0, max_grad_norm=1.0, seed=cfg.agent_seed,
        data_seed=cfg.agent_seed, completion_only_loss=True, max_length=cfg.max_position_embeddings,
        packing=False, bf16=False, fp16=False, activation_checkpointing=False, use_cpu=True, save_strategy="no",
        train_sampling_strategy="group_by_length", report_to=[], logging_steps=max(1, cfg.agent_steps // 10),
        dataloader_num_workers=0,
        disable_tqdm=True, dataset_num_proc=None,  # callbacks.StepBar shows the steps
    )


def _clone(model: Any, tokenizer: Any, examples: list[Example], cfg: TinyConfig, work: Path) -> Any:
    """Supervised fine-tuning on the agent's turns (loss on the completion only), deterministic on CPU."""
    from datasets import Dataset

    args = sft_args(cfg, work)
    from agent_safety.train.callbacks import StepBar

    trainer = _trainer(cfg.agent_loss)(model=model, args=args, train_dataset=Dataset.from_list(examples),
                                       processing_class=tokenizer, callbacks=[StepBar("tiny agent: cloning")])
    trainer.train()
    shutil.rmtree(work, ignore_errors=True)
    return trainer.model


def _trainer(loss: str) -> type:
    """The cloning's trainer class for ``model.tiny.agent_loss``."""
    from trl import SFTTrainer

    if loss == "trl":
        return SFTTrainer
    if loss == "completion":
        return _completion_trainer(SFTTrainer)
    raise ValueError(f"model.tiny.agent_loss={loss!r}: expected 'trl' or 'completion'")


def _completion_trainer(base: type) -> type:
    """``SFTTrainer`` whose loss projects only the completion's positions through the LM head.

    Off Triton devices TRL's fused head scores every position (and its entropy), and with a 4,096-token vocabulary
    on a 192-wide model the head is most of the work, while about one token in six is a completion token.
    """
    import torch
    import torch.nn.functional as F

    class CompletionTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"][:, 1:]
            hidden = model.model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                 use_cache=False).last_hidden_state[:, :-1]
            mask = labels != -100
            logits = model.lm_head(hidden[mask])
            targets = labels[mask]
            loss = F.cross_entropy(logits, targets, reduction="sum") / max(int(targets.numel()), 1)
            with torch.no_grad():
                right = (logits.argmax(-1) == targets).float().mean().item()
            self._metrics["train"]["mean_token_accuracy"].append(right)
            return (loss, None) if return_outputs else loss

    return CompletionTrainer
