"""Agent backends: the stage's model writing the agent's turns, for every unfinished episode of a round at once.

Three backends share one interface (:class:`AgentBackend`) and one accounting of tokens:

- ``transformers``: the model in this process, prompts sorted by length and generated ``batch_size`` at a
  time with left padding and a static KV cache.
- ``vllm``: an in-process ``vllm.LLM`` engine on the stage's model folder (GPU, or vLLM's CPU build; the
  optional ``vllm`` extra); with ``eval.agent.adapters`` on the base model with the stage's stacked adapter.
- ``openai``: an OpenAI-compatible endpoint (``eval.agent.endpoint``) through :class:`client.Endpoint`, whose
  served model name may name the stage (``{path}``, ``{stage}``, ``{run_id}``); with ``eval.agent.adapters``
  the stage is its stacked adapter, loaded into the server by name (``generative.adapters``).

How the in-process backends count and cut, so that the three agree:

- The prompt is the tokenizer's chat template with the generation prompt, tokenised without added special
  tokens (the template writes them), exactly as training tokenised its prompts.
- A generation ends at the first of: its own ``max_tokens``, an end-of-sequence token, a stop string.
  The text is cut before the first stop string (the stop string is not returned) and decoded without
  special tokens. ``completion_tokens`` counts the tokens the model generated: up to and including the token
  that completed the stop string, the end-of-sequence token included when one was generated, never padding.
  This is what vLLM and OpenAI-compatible servers report for the same generation.
- Greedy at temperature 0. Sampling is temperature alone: no top-k, top-p or repetition penalty from the
  model's generation config (Qwen2.5's asks for a repetition penalty even when greedy), as the ``vllm``
  backend's ``SamplingParams`` have it; the ``openai`` backend sends only the temperature (a server may add
  defaults of its own). The ``transformers`` backend seeds each batch (``seed`` + batch number) without
  touching the global RNG.
- The context window: a prompt whose ``max_tokens`` would run past the model's window gets fewer new tokens
  (as many as fit); a prompt that leaves no room at all gets an empty generation of 0 tokens and a warning
  (the rollout reads it as an output with nothing parseable; the episode ends after its continuations)
  rather than an error that would stop every other episode of the evaluation; ``full_window`` counts them, and
  the evaluation says how many in one line.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent_safety.agent.episode import Generation
from agent_safety.config.validate import AGENT_BACKENDS
from agent_safety.evaluate.generative.client import PLACEHOLDER_KEY, ChatRequest, Endpoint, EndpointError

log = logging.getLogger(__name__)

VLLM_MISSING = "eval.agent.backend=vllm needs the vllm extra: pip install 'agent-safety[vllm]' (GPU)"
Messages = list[dict[str, str]]


class AgentBackend(Protocol):
    """Writes the agent's next turn for a batch of episodes."""

    def generate(self, prompts: list[Messages], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        """One generation per prompt (chat messages), in order; each at most its own ``max_tokens``."""
        ...

    def close(self) -> None:
        """Free what the backend holds (an engine); the caller's model is the caller's."""
        ...


def make_agent(cfg: Any, model_path: str, load_model: Callable[[], Any], tokenizer: Any, cache_dir: Path,
               run_id: str, stage: int, adapter: str | None = None, base_path: str | None = None) -> AgentBackend:
    """The backend ``cfg.backend`` names, for the stage whose model is at ``model_path`` (its stacked adapter
    over ``base_path`` at ``adapter``).

    ``load_model`` is called only by the ``transformers`` backend, so the other two never hold a copy.
    """
    backend = cfg.backend
    lora = stage_adapter(cfg, adapter, stage)
    if backend == "transformers":
        return TransformersAgent(load_model(), tokenizer, batch_size=int(cfg.batch_size),
                                 temperature=float(cfg.temperature))
    if backend == "vllm":
        engine = plain(getattr(cfg, "engine", None))
        if lora is None:
            return VLLMAgent(model_path, tokenizer, temperature=float(cfg.temperature), **engine)
        return VLLMAgent(str(base_path or model_path), tokenizer, temperature=float(cfg.temperature), adapter=lora,
                         **engine)
    if backend == "openai":
        model = served_model(cfg.endpoint.model, model_path, stage, run_id)
        if lora is not None:
            model = serve_adapter(cfg.endpoint, lora, stage)
        endpoint = Endpoint(cfg.endpoint, Path(cache_dir), role="agent", model=model)
        return OpenAIAgent(endpoint, temperature=float(cfg.temperature))
    raise ValueError(f"eval.agent.backend={backend!r} is not a backend; choose one of: {', '.join(AGENT_BACKENDS)}")


def plain(value: Any) -> dict[str, Any]:
    """A config mapping as a plain dict (keyword arguments for an engine)."""
    from omegaconf import DictConfig, OmegaConf

    return dict(OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value or {})


def stage_adapter(cfg: Any, adapter: str | None, stage: int) -> str | None:
    """The stacked adapter to serve this stage as (``eval.agent.adapters``); None: the model itself."""
    if not getattr(cfg, "adapters", False) or stage == 0:
        return None
    if cfg.backend == "transformers":
        raise ValueError("eval.agent.adapters=true needs eval.agent.backend=openai or vllm (a server or engine "
                         "that serves LoRA adapters); the transformers backend merges the stage in memory")
    if adapter is None:
        raise ValueError(f"eval.agent.adapters=true: stage {stage} has no stacked adapter (stage_{stage}/stacked/, "
                         "written by stages trained since stacked adapters exist)")
    return adapter


def serve_adapter(endpoint_cfg: Any, adapter: str, stage: int) -> str:
    """Load the stage's stacked adapter into the endpoint's server; its served model name."""
    from agent_safety.evaluate.generative.adapters import adapter_name, load_adapter

    url = str(endpoint_cfg.base_url or "").rstrip("/")
    if not url:
        raise EndpointError("the agent endpoint has no base_url (e.g. http://localhost:8000/v1)")
    key = os.environ.get(endpoint_cfg.api_key_env or "", "") or PLACEHOLDER_KEY
    name = adapter_name(adapter, stage)
    load_adapter(url, name, adapter, key, float(endpoint_cfg.timeout_s))
    return name


def served_model(template: str | None, model_path: str, stage: int, run_id: str) -> str:
    """The endpoint's model name for this stage: ``eval.agent.endpoint.model`` with its placeholders filled
    (``{path}``, ``{stage}``, ``{run_id}``); unset, the stage's model path (what ``vllm serve PATH`` serves)."""
    if not template:
        return model_path
    try:
        return str(template).format(path=model_path, stage=stage, run_id=run_id)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"eval.agent.endpoint.model={template!r}: only {{path}}, {{stage}} and {{run_id}} "
                         f"can be filled in ({type(e).__name__}: {e})") from None


def render(tokenizer: Any, messages: Messages) -> list[int]:
    """Prompt token ids: the chat template with the generation prompt, special tokens as the template writes them."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except ValueError as e:  # no chat template
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"the tokenizer of {name} cannot render the agent's chat messages: {e}") from None
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` before the earliest stop string, and whether one was found."""
    at = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text, False) if at < 0 else (text[:at], True)


def fit_budgets(prompt_lengths: Sequence[int], max_tokens: Sequence[int], window: int | None) -> list[int]:
    """New tokens each prompt may have: its ``max_tokens``, fewer where the context window ends first
    (0: the prompt alone fills the window; such prompts are not generated, see the module docstring)."""
    if len(prompt_lengths) != len(max_tokens):
        raise ValueError(f"{len(prompt_lengths)} prompts but {len(max_tokens)} max_tokens")
    budgets = []
    for n, m in zip(prompt_lengths, max_tokens, strict=True):
        room = int(m) if window is None else min(int(m), window - n)
        if room <= 0 < int(m):
            log.debug("an agent prompt of %d tokens fills the context window of %s: empty generation", n, window)
        budgets.append(max(0, room))
    return budgets


class TransformersAgent:
    """Batched generation with the caller's model (already on its device), greedy at temperature 0."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, temperature: float = 0.0,
                 static_cache: bool = True, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"eval.agent.batch_size={batch_size}: must be at least 1")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.temperature, self.static_cache = batch_size, temperature, static_cache
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.window = context_window(model.config, tokenizer)
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self.seed, self._batches = seed, 0
        self.full_window = 0

    def generate(self, prompts: list[Messages], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        import torch

        ids = [render(self.tokenizer, p) for p in prompts]
        budgets = fit_budgets([len(i) for i in ids], max_tokens, self.window)
        self.full_window += sum(b <= 0 < int(m) for b, m in zip(budgets, max_tokens, strict=True))
        out = [Generation("", 0, len(i)) for i in ids]
        order = sorted((k for k in range(len(ids)) if budgets[k] > 0), key=lambda k: -len(ids[k]))
        stop = [s for s in stop if s]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    batch = order[start:start + self.batch_size]
                    rows = self._generate_batch([ids[k] for k in batch], [budgets[k] for k in batch], stop)
                    for k, row in zip(batch, rows, strict=True):
                        out[k] = self._finish(row, stop, len(ids[k]))
        finally:
            self.model.train(was_training)
        return out

    def close(self) -> None:
        """Nothing to free: the model belongs to the caller."""
        self._stop_criteria.clear()

    def _generate_batch(self, prompts: list[list[int]], budgets: list[int], stop: list[str]) -> list[list[int]]:
        """New token ids of each prompt, cut at its own budget and just after its first end-of-sequence token."""
        import torch

        device = self.model.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        criteria = [RowBudget(width, budgets)] + ([self._stop_criterion(stop)] if stop else [])
        sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
                    "typical_p": 1.0} if self.temperature > 0 else {"do_sample": False}
        self._batches += 1
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed + self._batches)  # sampling reproducible batch by batch; greedy ignores it
            generated = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=max(budgets),
                pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids), use_cache=True, repetition_penalty=1.0,
                stopping_criteria=_criteria_list(criteria), **self._cache_kwargs(), **sampling)
        vars(self.model).pop("_previous_max_cache_length", None)  # generate's memo: the next call sizes its own
        rows = []
        for r, budget in enumerate(budgets):
            row = generated[r, width:width + budget].tolist()
            end = next((j + 1 for j, t in enumerate(row) if t in self.eos_ids), len(row))
            rows.append(row[:end])
        return rows

    def _cache_kwargs(self) -> dict[str, Any]:
        """A static KV cache: written in place, where the default cache copies itself at every new token (half
        the time of a batch of 32 on the tiny model on CPU); never compiled, since every batch has its own shape
        and a compile per shape costs far more than it saves."""
        return {"cache_implementation": "static", "disable_compile": True} if self.static_cache else {}

    def _finish(self, row: list[int], stop: list[str], prompt_tokens: int) -> Generation:
        """The generation of one row: text cut before the first stop string, tokens counted up to it."""
        body = row[:-1] if row and row[-1] in self.eos_ids else row
        text, stopped = cut_at_stop(self._decode(body), stop)
        if not stopped:
            return Generation(text, len(row), prompt_tokens)
        # the fewest tokens whose text holds a stop string: decoding a prefix only ever extends the text
        lo, hi = 1, len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            if cut_at_stop(self._decode(body[:mid]), stop)[1]:
                hi = mid
            else:
                lo = mid + 1
        return Generation(text, hi, prompt_tokens)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _stop_criterion(self, stop: list[str]) -> Any:
        """transformers' StopStringCriteria, built once per set of stop strings (it indexes the vocabulary)."""
        key = tuple(stop)
        if key not in self._stop_criteria:
            from transformers import StopStringCriteria

            self._stop_criteria[key] = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(key))
        return self._stop_criteria[key]


class RowBudget:
    """Stopping criterion: a row is done once it has its own number of new tokens (``generate`` alone knows
    only one ``max_new_tokens`` per batch), so a batch ends as soon as every row has what it asked for."""

    def __init__(self, prompt_width: int, budgets: list[int]) -> None:
        self.prompt_width, self.budgets = prompt_width, budgets
        self._tensor: Any = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self._tensor is None or self._tensor.device != input_ids.device:
            self._tensor = torch.tensor(self.budgets, device=input_ids.device)
        return (input_ids.shape[1] - self.prompt_width) >= self._tensor


class VLLMAgent:
    """An in-process vLLM engine on the stage's model folder; prompts rendered with the run's tokenizer."""

    def __init__(self, model_path: str, tokenizer: Any, temperature: float = 0.0, seed: int = 0,
                 adapter: str | None = None, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise RuntimeError(VLLM_MISSING) from None
        self.tokenizer, self.temperature, self.seed = tokenizer, temperature, seed
        self.lora = None
        if adapter is not None:  # the base model with the stage's stacked adapter
            from vllm.lora.request import LoRARequest

            rank = int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
            engine_kwargs = {"enable_lora": True, "max_lora_rank": lora_rank_slot(rank), "max_loras": 1,
                             **engine_kwargs}
            self.lora = LoRARequest(Path(adapter).name, 1, str(adapter))
        self.llm = vllm.LLM(model=model_path, seed=seed, **engine_kwargs)
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.window = getattr(config, "max_model_len", None)
        self.full_window = 0

    def generate(self, prompts: list[Messages], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        from vllm import SamplingParams

        ids = [render(self.tokenizer, p) for p in prompts]
        budgets = fit_budgets([len(i) for i in ids], max_tokens, self.window)
        self.full_window += sum(b <= 0 < int(m) for b, m in zip(budgets, max_tokens, strict=True))
        out = [Generation("", 0, len(i)) for i in ids]
        todo = [k for k in range(len(ids)) if budgets[k] > 0]
        stop = [s for s in stop if s]
        params = [SamplingParams(temperature=self.temperature, max_tokens=budgets[k], stop=stop or None,
                                 seed=self.seed + k if self.temperature > 0 else None) for k in todo]
        results = self.llm.generate([{"prompt_token_ids": ids[k]} for k in todo], params, use_tqdm=False,
                                    lora_request=self.lora)
        for k, result in zip(todo, results, strict=True):
            completion = result.outputs[0]
            out[k] = Generation(cut_at_stop(completion.text, stop)[0], len(completion.token_ids), len(ids[k]))
        return out

    def close(self) -> None:
        """Shut the engine down and give its GPU memory back."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


#: The adapter ranks a vLLM engine can be sized for (``max_lora_rank``).
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of this rank."""
    slot = next((s for s in LORA_RANK_SLOTS if s >= rank), None)
    if slot is None:
        raise ValueError(f"a stacked adapter of rank {rank} is above vLLM's largest max_lora_rank "
                         f"({LORA_RANK_SLOTS[-1]}): serve merged models (eval.agent.adapters=false)")
    return slot


class OpenAIAgent:
    """The agent served by an OpenAI-compatible endpoint; responses come from the endpoint's cache when known."""

    def __init__(self, endpoint: Any, temperature: float = 0.0) -> None:
        self.endpoint, self.temperature = endpoint, temperature

    def generate(self, prompts: list[Messages], max_tokens: list[int], stop: list[str]) -> list[Generation]:
        if len(prompts) != len(max_tokens):
            raise ValueError(f"{len(prompts)} prompts but {len(max_tokens)} max_tokens")
        stop = [s for s in stop if s]
        todo = [k for k, m in enumerate(max_tokens) if m > 0]  # servers reject max_tokens=0
        requests = [ChatRequest(prompts[k], temperature=self.temperature, max_tokens=int(max_tokens[k]),
                                stop=stop or None) for k in todo]
        results = self.endpoint.complete(requests, desc="agent") if requests else []
        out = [Generation("", 0, 0) for _ in prompts]
        for k, r in zip(todo, results, strict=True):
            # servers that ignore ``stop`` (the study's did) still get their text cut; the count is theirs
            out[k] = Generation(cut_at_stop(r.text, stop)[0], r.completion_tokens, r.prompt_tokens)
        return out

    def close(self) -> None:
        close = getattr(self.endpoint, "close", None)
        if callable(close):
            close()


def context_window(config: Any, tokenizer: Any) -> int | None:
    """Tokens the model can attend to: its ``max_position_embeddings``, else the tokenizer's
    ``model_max_length`` when that is a real limit; None when neither says."""
    window = getattr(config, "max_position_embeddings", None)
    if window:
        return int(window)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**8 else None


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """End-of-sequence ids: the model's generation config (chat models list several), else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = frozenset(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer names an end-of-sequence token")
    return ids


def _criteria_list(criteria: list[Any]) -> Any:
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList(criteria)
