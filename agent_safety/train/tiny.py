"""A real small causal LM built fully offline: a BPE tokenizer trained on the data's own text and a
randomly initialised Llama-architecture model, cached by the hash of everything that defines them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from agent_safety.config.schema import TinyConfig
from agent_safety.records.cache import building

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
#: Bump when the build recipe changes, so old cached builds are not reused.
RECIPE_VERSION = "1"
CORPUS_CHAR_LIMIT = 8_000_000


def tiny_key(cfg: TinyConfig, corpus_digest: str) -> str:
    """Content hash of a tiny model: its shape, init seed, tokenizer corpus and recipe."""
    payload = json.dumps({"cfg": asdict(cfg), "corpus": corpus_digest, "template": CHAT_TEMPLATE,
                          "specials": SPECIAL_TOKENS, "recipe": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _train_tokenizer(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|end|>",
                                   pad_token="<|pad|>", chat_template=CHAT_TEMPLATE)


def build_tiny(cfg: TinyConfig, corpus: list[str], cache_dir: str | Path) -> Path:
    """Return the folder of the tiny model for this corpus, building it once.

    The build goes to a temporary folder renamed into place, so concurrent jobs and interrupted
    builds never leave a half-written model behind.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    budget, texts = CORPUS_CHAR_LIMIT, []
    for t in corpus:  # deterministic prefix of the corpus: tokenizer training time stays bounded
        if budget <= 0:
            break
        texts.append(t[:budget])
        budget -= len(t)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    target = Path(cache_dir) / "models" / f"tiny-{tiny_key(cfg, digest)}"
    if (target / "config.json").exists():
        return target
    with building(target):
        if (target / "config.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            tokenizer = _train_tokenizer(texts, cfg.vocab_size)
            config = LlamaConfig(
                vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
            )
            with torch.random.fork_rng():
                torch.manual_seed(cfg.init_seed)
                model = LlamaForCausalLM(config)
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            try:
                os.replace(tmp, target)
            except OSError:  # another job built the same model first
                if not (target / "config.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
