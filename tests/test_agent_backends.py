"""Agent backends on real models: the tiny model in process (transformers), vLLM where a GPU and the extra are
there, and the local OpenAI-compatible server (``llm``).

The in-process expectations come from plain greedy ``model.generate`` on each prompt alone (no padding, no
stop strings, no per-row budgets): batching, left padding, per-prompt budgets, stop strings and the context
window must give exactly those tokens, cut where the contract says.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import LLM_MODEL, compose

from agent_safety.agent.episode import Generation
from agent_safety.config.schema import AgentConfig, EndpointConfig
from agent_safety.evaluate.generative.agent import (
    VLLM_MISSING,
    TransformersAgent,
    make_agent,
    render,
    served_model,
)

N_PROMPTS = 5


@pytest.fixture(scope="module")
def tiny(cache_dir: Path) -> Iterator[dict[str, Any]]:
    """The project's tiny model and tokenizer, and chat prompts of different lengths from the synthetic cases.
    One torch thread, as a sweep job has (and two threads slow down many times on a busy 2-core machine)."""
    from agent_safety.data.benchmark import load_data
    from agent_safety.pairs.formatting import prompt_messages
    from agent_safety.train.models import load_model, load_tokenizer, resolve_base

    cfg = compose([f"paths.cache_dir={cache_dir}", f"paths.runs_dir={cache_dir / 'runs'}", "threads=1"])
    bench = load_data(cfg.data, cache_dir)
    path, _ = resolve_base(cfg.model, bench, cache_dir)
    tokenizer, model = load_tokenizer(path, cfg.model), load_model(path, cfg.model)
    prompts = [prompt_messages(case, bench.toolkits) for case in list(bench.cases.values())[:N_PROMPTS]]
    assert len({len(render(tokenizer, p)) for p in prompts}) == N_PROMPTS  # left padding gets exercised
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"path": path, "tokenizer": tokenizer, "model": model, "prompts": prompts, "cfg": cfg}
    torch.set_num_threads(threads)


def reference(tiny: dict[str, Any], messages: list[dict[str, str]], n: int) -> list[int]:
    """``n`` greedy tokens of one prompt alone, straight from ``model.generate``."""
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    ids = torch.tensor([render(tokenizer, messages)])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def decode(tiny: dict[str, Any], ids: list[int]) -> str:
    return tiny["tokenizer"].decode(ids, skip_special_tokens=True)


def test_batched_generation_equals_each_prompt_alone(tiny: dict[str, Any]) -> None:
    prompts = tiny["prompts"]
    agent = TransformersAgent(tiny["model"], tiny["tokenizer"], batch_size=3)  # a full batch and a partial one
    batched = agent.generate(prompts, [24] * len(prompts), [])
    alone = [TransformersAgent(tiny["model"], tiny["tokenizer"], batch_size=1).generate([p], [24], [])[0]
             for p in prompts]
    assert batched == alone
    for p, gen in zip(prompts, batched, strict=True):
        ref = reference(tiny, p, 24)
        assert not set(ref) & {tiny["tokenizer"].eos_token_id}  # the tiny model never ends on its own here
        assert gen == Generation(decode(tiny, ref), 24, len(render(tiny["tokenizer"], p)))
    assert len({g.text for g in batched}) > 1
    assert agent.generate(prompts, [24] * len(prompts), []) == batched  # deterministic across calls


def test_each_prompt_gets_its_own_max_tokens(tiny: dict[str, Any]) -> None:
    budgets = [3, 17, 1, 24, 9]
    gens = TransformersAgent(tiny["model"], tiny["tokenizer"], batch_size=8).generate(tiny["prompts"], budgets, [])
    for p, m, gen in zip(tiny["prompts"], budgets, gens, strict=True):
        assert gen.completion_tokens == m
        assert gen.text == decode(tiny, reference(tiny, p, m))


def test_a_stop_string_cuts_the_text_and_the_count_ends_at_the_token_that_completed_it(tiny: dict[str, Any]) -> None:
    n = 32
    refs = [reference(tiny, p, n) for p in tiny["prompts"]]
    first = decode(tiny, refs[0])
    stop = first[len(decode(tiny, refs[0][:12])):][:5]  # a piece the first prompt's greedy text really holds
    assert stop and stop in first
    gens = TransformersAgent(tiny["model"], tiny["tokenizer"], batch_size=8).generate(
        tiny["prompts"], [n] * len(refs), ["never written", stop])
    cut = 0
    for ref, gen in zip(refs, gens, strict=True):
        full = decode(tiny, ref)
        if stop not in full:
            assert (gen.text, gen.completion_tokens) == (full, n)
            continue
        k = next(k for k in range(1, n + 1) if stop in decode(tiny, ref[:k]))  # the token that completes it
        assert (gen.text, gen.completion_tokens) == (full[:full.index(stop)], k)
        cut += 1
    assert cut >= 1 and gens[0].completion_tokens < n


def test_an_end_of_sequence_token_ends_the_generation_and_is_counted(tiny: dict[str, Any]) -> None:
    model, prompt = tiny["model"], tiny["prompts"][0]
    ref = reference(tiny, prompt, 16)
    j = next(j for j in range(3, 16) if ref[j] not in ref[:j])  # a token first generated at position j
    saved = model.generation_config
    model.generation_config = copy.deepcopy(saved)
    model.generation_config.eos_token_id = ref[j]  # as if the model's end token were that one
    try:
        agent = TransformersAgent(model, tiny["tokenizer"], batch_size=4)
    finally:
        model.generation_config = saved
    gens = agent.generate(tiny["prompts"][:2], [16, 16], [])
    assert gens[0] == Generation(decode(tiny, ref[:j]), j + 1, len(render(tiny["tokenizer"], prompt)))


def test_sampling_is_reproducible_from_the_seed_and_leaves_the_global_rng_alone(tiny: dict[str, Any]) -> None:
    prompts, budgets = tiny["prompts"], [12, 5, 12, 12, 7]

    def sample(seed: int) -> list[Generation]:
        return TransformersAgent(tiny["model"], tiny["tokenizer"], batch_size=3, temperature=1.0,
                                 seed=seed).generate(prompts, budgets, [])

    state = torch.random.get_rng_state()
    first = sample(0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert sample(0) == first
    assert [g.completion_tokens for g in first] == budgets
    greedy = TransformersAgent(tiny["model"], tiny["tokenizer"]).generate(prompts, budgets, [])
    assert first != greedy and sample(1) != first


def test_sampling_defaults_in_the_models_generation_config_do_not_change_greedy_output(tiny: dict[str, Any]) -> None:
    model, prompts = tiny["model"], tiny["prompts"][:3]
    plain = TransformersAgent(model, tiny["tokenizer"]).generate(prompts, [20] * 3, [])
    saved = model.generation_config
    model.generation_config = copy.deepcopy(saved)
    config = model.generation_config  # what Qwen2.5-Instruct ships: sampling, top-k/p and a repetition penalty
    config.do_sample, config.temperature, config.top_k, config.top_p, config.repetition_penalty = \
        True, 0.7, 20, 0.8, 1.05
    try:
        assert TransformersAgent(model, tiny["tokenizer"]).generate(prompts, [20] * 3, []) == plain
    finally:
        model.generation_config = saved


def test_the_model_is_put_back_in_its_mode(tiny: dict[str, Any]) -> None:
    model = tiny["model"]
    agent = TransformersAgent(model, tiny["tokenizer"])
    model.train()
    try:
        agent.generate(tiny["prompts"][:2], [2, 2], [])
        assert model.training
    finally:
        model.eval()
    agent.generate(tiny["prompts"][:2], [2, 2], [])
    assert not model.training


def test_the_context_window_shrinks_max_tokens_or_leaves_a_prompt_ungenerated(tiny: dict[str, Any]) -> None:
    model, tokenizer, prompts = tiny["model"], tiny["tokenizer"], tiny["prompts"]
    lengths = [len(render(tokenizer, p)) for p in prompts]
    window = sorted(lengths)[-1] + 5  # the longest prompt has room for 5 tokens, the others for more
    saved = model.config.max_position_embeddings
    model.config.max_position_embeddings = window
    try:
        agent = TransformersAgent(model, tokenizer, batch_size=8)
    finally:
        model.config.max_position_embeddings = saved
    gens = agent.generate(prompts, [20] * len(prompts), [])
    for p, n, gen in zip(prompts, lengths, gens, strict=True):
        m = min(20, window - n)
        assert gen == Generation(decode(tiny, reference(tiny, p, m)), m, n)
    long = [{"role": "user", "content": " ".join(["emails"] * 3000)}]
    too_long = len(render(tokenizer, long))
    assert too_long >= model.config.max_position_embeddings
    gens = TransformersAgent(model, tokenizer).generate([long, prompts[0]], [20, 4], [])
    assert gens[0] == Generation("", 0, too_long)
    assert gens[1].completion_tokens == 4


def test_make_agent_builds_the_transformers_backend_and_names_a_bad_one(tiny: dict[str, Any], tmp_path: Path) -> None:
    loads = []

    def load() -> Any:
        loads.append(1)
        return tiny["model"]

    agent = make_agent(AgentConfig(batch_size=4), tiny["path"], load, tiny["tokenizer"], tmp_path, "run", 1)
    assert isinstance(agent, TransformersAgent) and loads == [1]
    assert agent.generate(tiny["prompts"][:1], [3], [])[0].completion_tokens == 3
    agent.close()
    with pytest.raises(ValueError, match=r"eval\.agent\.backend='nope'.*transformers, vllm, openai"):
        make_agent(AgentConfig(backend="nope"), tiny["path"], load, tiny["tokenizer"], tmp_path, "run", 1)
    assert loads == [1]


def test_the_served_model_name_fills_the_stage_placeholders() -> None:
    assert served_model("{run_id}/s{stage}", "/runs/x/model", 2, "abc") == "abc/s2"
    assert served_model("agent@{path}", "/runs/x/model", 2, "abc") == "agent@/runs/x/model"
    assert served_model(None, "/runs/x/model", 2, "abc") == "/runs/x/model"
    with pytest.raises(ValueError, match=r"eval\.agent\.endpoint\.model='\{step\}'"):
        served_model("{step}", "/runs/x/model", 2, "abc")


def _vllm_missing() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _vllm_missing(), reason="vllm is installed: the missing-extra message cannot show")
def test_vllm_without_the_extra_says_how_to_install_it(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as e:
        make_agent(AgentConfig(backend="vllm"), tiny["path"], lambda: None, tiny["tokenizer"], tmp_path, "r", 0)
    assert str(e.value) == VLLM_MISSING


@pytest.mark.skipif(_vllm_missing() or not torch.cuda.is_available(),
                    reason="the vllm backend needs the vllm extra and a CUDA GPU (pip install 'agent-safety[vllm]')")
def test_vllm_generates_each_prompt_to_its_budget_and_cuts_at_stop(tiny: dict[str, Any], tmp_path: Path) -> None:
    agent = make_agent(AgentConfig(backend="vllm"), tiny["path"], lambda: None, tiny["tokenizer"], tmp_path, "r", 0)
    try:
        budgets = [3, 17, 1, 24, 9]
        gens = agent.generate(tiny["prompts"], budgets, [])
        assert [g.completion_tokens for g in gens] == budgets
        assert [g.prompt_tokens for g in gens] == [len(render(tiny["tokenizer"], p)) for p in tiny["prompts"]]
        assert agent.generate(tiny["prompts"], budgets, []) == gens
        stop = gens[3].text[len(gens[3].text) // 2:][:4]
        cut = agent.generate(tiny["prompts"][3:4], [24], [stop])[0]
        assert stop not in cut.text and gens[3].text.startswith(cut.text) and cut.completion_tokens < 24
    finally:
        agent.close()


@pytest.mark.llm
def test_openai_backend_answers_each_prompt_through_the_endpoint(llm_url: str, tmp_path: Path) -> None:
    endpoint = EndpointConfig(base_url=llm_url, model="{run_id}", max_concurrency=2)
    cfg = AgentConfig(backend="openai", endpoint=endpoint)
    agent = make_agent(cfg, "/runs/x/stage_1/model", lambda: pytest.fail("loaded a model"), None, tmp_path,
                       LLM_MODEL, 1)
    prompts = [[{"role": "user", "content": "Name a colour."}],
               [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Count to five."}]]
    gens = agent.generate(prompts, [12, 12], ["\nObservation:"])
    assert len(gens) == 2
    for gen in gens:
        assert isinstance(gen.text, str) and 0 < gen.completion_tokens <= 12 and gen.prompt_tokens > 0
        assert "\nObservation:" not in gen.text
    assert agent.generate(prompts, [12, 12], ["\nObservation:"]) == gens  # the second time from the cache
    assert agent.endpoint.usage.requests_sent == 2
    agent.close()
