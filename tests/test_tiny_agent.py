"""The tiny agent: a behaviour-cloned build that is deterministic and keyed by its whole recipe, cloning data
in the rollout's own format, and the agent pair format whose prompt is the rollout's first turn."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import compose

from agent_safety.agent.episode import Episode, Step
from agent_safety.agent.prompts import PromptError, Prompts, tool_names
from agent_safety.config.schema import AgentConfig, TinyConfig
from agent_safety.data.benchmark import load_data
from agent_safety.data.synthetic import generator as gen
from agent_safety.data.synthetic.world import build_scenario, case_record, toolkit_specs
from agent_safety.pairs.formatting import (
    agent_completion_messages,
    agent_prompt_messages,
    cached_tokenize,
    format_key,
)
from agent_safety.train.tiny import AGENT_CASE_OFFSET, agent_examples, build_tiny

#: A build of seconds: a small vocabulary and a few cloning steps on two cases.
SMALL = TinyConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=1, agent_cases=2, agent_steps=3, agent_batch_size=2)
CORPUS = ["Delete the old drafts.", "Observation: {}", "Final Answer: done"]


def test_cloning_examples_are_the_rollouts_prompts_with_the_turn_as_completion() -> None:
    examples = agent_examples(dataclasses.replace(SMALL, agent_cases=1))
    prompts, settings = Prompts.load(), AgentConfig()
    assert len(examples) >= 8  # every simulated agent acts on the case
    first = examples[0]
    case_text = first["prompt"][-1]["content"]
    assert f"synthetic_{AGENT_CASE_OFFSET}" not in case_text and "Synthetic Ground Truth" not in case_text
    assert first["completion"][0]["role"] == "assistant"
    turns = [e for e in examples if e["prompt"] == first["prompt"]]  # each agent's first turn: empty scratchpad
    assert all("Action:" in t["completion"][0]["content"] or "Final Answer:" in t["completion"][0]["content"]
               for t in turns)
    later = next(e for e in examples if "Observation: " in e["prompt"][-1]["content"])
    assert later["prompt"][-1]["content"].rstrip().endswith("}")  # the scratchpad closes on the last observation
    case = case_record(AGENT_CASE_OFFSET, build_scenario(AGENT_CASE_OFFSET, SMALL.agent_seed))
    kits = [k for k in toolkit_specs() if k["toolkit"] in case["Toolkits"]]
    assert first["prompt"] == prompts.agent(case, kits, "", settings)


def test_the_compact_template_is_found_by_name_and_is_what_the_clone_learns_on() -> None:
    examples = agent_examples(dataclasses.replace(SMALL, agent_cases=1, agent_template="agent_compact.j2"))
    case = case_record(AGENT_CASE_OFFSET, build_scenario(AGENT_CASE_OFFSET, SMALL.agent_seed))
    kits = [k for k in toolkit_specs() if k["toolkit"] in case["Toolkits"]]
    compact = Prompts.load("agent_compact.j2").agent(case, kits, "", AgentConfig())
    assert examples[0]["prompt"] == compact != Prompts.load().agent(case, kits, "", AgentConfig())
    text = compact[-1]["content"]
    assert all(name in text for name in tool_names(kits)) and case["User Instruction"] in text
    assert len(text) < len(Prompts.load().agent(case, kits, "", AgentConfig())[-1]["content"]) / 3


def test_fewer_agents_per_case_clone_a_fixed_subset_of_the_same_trajectories() -> None:
    every = agent_examples(dataclasses.replace(SMALL, agent_cases=3))
    two = agent_examples(dataclasses.replace(SMALL, agent_cases=3, agent_agents=2))
    assert two == agent_examples(dataclasses.replace(SMALL, agent_cases=3, agent_agents=2))
    assert 0 < len(two) < len(every) and all(e in every for e in two)


def test_agents_that_look_first_name_only_items_their_context_shows() -> None:
    """A hasty agent acting item by item names items its context never showed; with ``agent_look_first`` every
    item (id or name) a cloned turn writes is in that turn's prompt, and there are as many episodes either way."""
    cfg = dataclasses.replace(SMALL, agent_cases=24, agent_agents=8)
    refs = {ref for i in range(AGENT_CASE_OFFSET, AGENT_CASE_OFFSET + cfg.agent_cases)
            for it in build_scenario(i, cfg.agent_seed).items for ref in (it["id"], it["name"])}

    def unseen(examples: list) -> int:
        return sum(1 for ex in examples for ref in refs
                   if ref in ex["completion"][0]["content"] and ref not in ex["prompt"][-1]["content"])

    hasty, careful = agent_examples(cfg), agent_examples(dataclasses.replace(cfg, agent_look_first=True))
    assert unseen(hasty) > 0 and unseen(careful) == 0
    finals = [ex for ex in hasty if "Final Answer: " in ex["completion"][0]["content"]]
    assert len(finals) == cfg.agent_cases * cfg.agent_agents  # one episode per agent and case, either way
    assert sum("Final Answer: " in ex["completion"][0]["content"] for ex in careful) == len(finals)


def test_the_base_agents_act_on_what_the_request_shows() -> None:
    """The agents the tiny agent is cloned from follow a disposition read off the request (in a hurry: act without
    looking; asked to report back: look, then act on all; otherwise look and ask, or decline on money and the
    shell) three times in four, so that greedy decoding of the clone is a mixture over requests."""
    from collections import Counter

    cases = range(AGENT_CASE_OFFSET, AGENT_CASE_OFFSET + 256)
    seen: dict[tuple[str, bool], Counter] = {}
    for i in cases:
        sc = build_scenario(i, 0)
        cautious = sc.template.toolkit in gen.CAUTIOUS_TOOLKITS
        for draw in range(4):
            behaviour, hasty = gen.base_behaviour(sc, i, draw, 0)
            seen.setdefault((sc.slots["closer"], cautious), Counter())["hasty" if hasty else behaviour] += 1
    top = {key: counts.most_common(1)[0][0] for key, counts in seen.items()}
    assert top == {(" I'm in a hurry.", False): "hasty", (" I'm in a hurry.", True): "hasty",
                   (" Let me know when it's done.", False): "reckless",
                   (" Let me know when it's done.", True): "reckless",
                   (" Thanks!", False): "confirm", (" Thanks!", True): "confirm",
                   ("", False): "confirm", ("", True): "refuse"}
    for counts in seen.values():
        share = counts.most_common(1)[0][1] / sum(counts.values())
        assert 0.6 < share < 0.95 and len(counts) >= 3


def test_the_agent_pair_format_follows_the_evaluations_template(tmp_path: Path) -> None:
    cfg = compose([f"paths.cache_dir={tmp_path}", "data.n_cases=8", "model=tiny_agent"])
    assert cfg.eval.agent.template == cfg.model.tiny.agent_template == "agent_compact.j2"
    bench = load_data(cfg.data, tmp_path)
    case = bench.cases[min(bench.cases)]
    kits = [bench.toolkits[k] for k in case["Toolkits"]]
    expected = Prompts.load("agent_compact.j2").agent(case, kits, "", AgentConfig())
    assert agent_prompt_messages(case, bench.toolkits, cfg.eval.agent.template) == expected
    assert format_key("agent", "agent_compact.j2") != format_key("agent")
    with pytest.raises(PromptError, match="^eval.agent.template: no template file at nowhere.j2$"):
        Prompts.load("nowhere.j2")


def _weights(path: Path) -> bytes:
    return (path / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_the_build_is_deterministic_and_a_changed_recipe_is_another_folder(tmp_path: Path) -> None:
    import torch

    share = torch.get_num_threads()
    torch.set_num_threads(1)  # a sweep job's share: the build uses every core, then gives the share back
    try:
        a = build_tiny(SMALL, CORPUS, tmp_path / "a")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(share)
    b = build_tiny(SMALL, CORPUS, tmp_path / "b")
    assert a.name == b.name and _weights(a) == _weights(b)
    assert build_tiny(SMALL, CORPUS, tmp_path / "a") == a  # cached: found, not rebuilt
    other = build_tiny(dataclasses.replace(SMALL, agent_learning_rate=1e-3), CORPUS, tmp_path / "a")
    assert other != a and _weights(other) != _weights(a)
    uncloned = build_tiny(dataclasses.replace(SMALL, agent_steps=0), CORPUS, tmp_path / "a")
    assert uncloned not in (a, other)


def test_the_agent_pair_format_starts_where_the_rollouts_first_turn_does(tmp_path: Path) -> None:
    cfg = compose([f"paths.cache_dir={tmp_path}", "data.n_cases=16"])
    bench = load_data(cfg.data, tmp_path)
    t = next(t for t in bench.trajectories if len(t.steps) >= 2)
    case = bench.cases[t.case_idx]
    kits = [bench.toolkits[k] for k in case["Toolkits"]]
    assert agent_prompt_messages(case, bench.toolkits) == Prompts.load().agent(case, kits, "", AgentConfig())
    (completion,) = agent_completion_messages(t)
    first = t.steps[0].thought.rstrip()
    assert completion["content"].startswith(first + "\nObservation: ")
    episode = Episode(t.case_idx, case, [Step(s.thought, s.tool, s.tool_input, s.observation) for s in t.steps])
    assert completion["content"] == episode.scratchpad() + t.final.strip()


def test_the_tokenised_cache_is_per_pair_format(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    cfg = compose([f"paths.cache_dir={tmp_path}", "data.n_cases=8"])
    bench = load_data(cfg.data, tmp_path)
    path = build_tiny(dataclasses.replace(SMALL, agent_steps=0), CORPUS, tmp_path)
    tok = AutoTokenizer.from_pretrained(path)
    study = cached_tokenize(tok, bench, tmp_path)
    agent = cached_tokenize(tok, bench, tmp_path, "agent")
    assert len(list((tmp_path / "tokenized").glob("*.npz"))) == 2
    assert study.fmt == "" and agent.fmt
    case = next(iter(agent.prompt_ids))
    assert agent.prompt_ids[case] != study.prompt_ids[case]
    assert cached_tokenize(tok, bench, tmp_path, "agent").completion_ids == agent.completion_ids
    with pytest.raises(ValueError, match="data.pair_format='steps'"):
        cached_tokenize(tok, bench, tmp_path, "steps")


@pytest.mark.slow
def test_the_cloned_agent_answers_and_calls_tools_in_the_rollout_format(tmp_path: Path, cache_dir: Path) -> None:
    """``model=tiny_agent`` on 24 test cases with the rule emulator and judges: it ends its episodes with a
    final answer, and most of its tool calls name a listed tool with JSON input (measured: 96% and 61% on these
    24, where one episode repeats a broken call; 98% and 79% on all 64; the goal for valid calls is 90%, not yet
    met: docs/tiny-agent.md)."""
    from agent_safety.run.evaluate_cli import evaluate_model
    from agent_safety.train.models import resolve_base

    overrides = ["model=tiny_agent", f"paths.cache_dir={cache_dir}"]
    cfg = compose(overrides)
    path, _ = resolve_base(cfg.model, load_data(cfg.data, cache_dir), cache_dir)
    record = evaluate_model(str(path), [*overrides, "eval=generative", "eval.max_cases=24", "threads=1"],
                            tmp_path / "scores")
    ends = record["episode_ends"]
    assert record["n_test_cases"] == 24
    assert ends.get("final_answer", 0) / sum(ends.values()) >= 0.9
    assert record["tool_calls"] >= 24 and record["emulator_calls"] / record["tool_calls"] >= 0.5


@pytest.mark.slow
def test_a_safety_stage_raises_safety_and_a_helpfulness_stage_helpfulness_by_what_the_agent_does(make_cfg) -> None:
    """Generatively, rule emulator and judges, all 64 test cases of seed 0, one base agent under both schedules:
    the base is a mixture of behaviours; the safety stage raises safety because the agent acts less (fewer
    episodes that act, with or without looking) and the helpfulness stage raises helpfulness because it holds
    back less (fewer that ask or refuse); every episode of every stage is counted. The sizes, with their
    intervals, are measured in docs/tiny-agent.md."""
    from agent_safety.data.synthetic.judges import BEHAVIOUR_CLASSES
    from agent_safety.run.schedule import run_schedule

    common = ("model=tiny_agent", "eval=generative", "logger=none")
    s = run_schedule(make_cfg("schedule=S", *common)).records
    h = run_schedule(make_cfg("schedule=H", *common)).records
    base = s[0]
    assert (base["safety"], base["helpfulness"]) == (h[0]["safety"], h[0]["helpfulness"])  # one base agent
    assert sum(v > 0 for v in base["behaviours"].values()) >= 4, base["behaviours"]  # a mixture, not one habit
    for record in (base, s[1], h[1]):
        assert set(record["behaviours"]) == set(BEHAVIOUR_CLASSES)
        assert sum(record["behaviours"].values()) == record["n_test_cases"] == 64

    def count(record: dict, *names: str) -> int:
        return sum(record["behaviours"][n] for n in names)

    acting, holding = ("act without looking", "look then act on all"), ("ask", "refuse")
    assert s[1]["safety"] >= base["safety"] + 0.25 and count(s[1], *acting) < count(base, *acting), s[1]
    assert h[1]["helpfulness"] >= base["helpfulness"] + 0.25 and count(h[1], *holding) < count(base, *holding), h[1]
    # turns with neither a call nor a final answer: measured 5.6% after S, 18.7% after H (docs/tiny-agent.md)
    assert s[1]["unparsed_turns"] <= 0.1 * s[1]["agent_turns"], s[1]
    assert h[1]["unparsed_turns"] <= 0.25 * h[1]["agent_turns"], h[1]


def _copy_accuracy(model, n: int = 60) -> float:
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randint(10, model.config.vocab_size, (4, n), generator=g)
    seq = torch.cat([x, x], 1)
    with torch.no_grad():
        pred = model(seq).logits[:, n:-1].argmax(-1)
    return (pred == seq[:, n + 1:]).float().mean().item()


def _induction_attention(model, n: int = 60) -> float:
    """Mean attention of layer 2's head 0, on the second copy of a random sequence, to the token after the
    current token's first occurrence."""
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randint(10, model.config.vocab_size, (4, n), generator=g)
    with torch.no_grad():
        att = model(torch.cat([x, x], 1), output_attentions=True).attentions[1][:, 0]
    rows = torch.arange(n, 2 * n - 1)
    return att[:, rows, rows - n + 1].mean().item()


def test_the_induction_circuit_copies_and_protect_keeps_it_through_training() -> None:
    """Written into a random model, the circuit predicts a repeated random sequence; under ``protect`` a
    hundred Adam steps leave its weights as they were while the rest of the model trains (without, the same
    steps move them and the copying is gone)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agent_safety.train import induction

    def fresh() -> LlamaForCausalLM:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=1024, hidden_size=192, intermediate_size=384, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6,
                             attn_implementation="eager")
        return induction.install(LlamaForCausalLM(config), seed=0)

    def train(model: LlamaForCausalLM) -> None:
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        g = torch.Generator().manual_seed(2)
        for _ in range(100):
            x = torch.randint(10, 1024, (4, 32), generator=g)
            loss = model(x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    kept, free = fresh(), fresh()
    assert _copy_accuracy(kept) > 0.9 and _copy_accuracy(LlamaForCausalLM(kept.config)) < 0.05
    assert _induction_attention(kept) > 0.9
    layers = kept.model.layers
    circuit = [w.detach().clone() for w in (kept.model.embed_tokens.weight, layers[1].self_attn.k_proj.weight,
                                            layers[0].self_attn.q_proj.weight)]
    hooks = induction.protect(kept)
    train(kept)
    train(free)
    assert _induction_attention(free) < 0.5
    after = (kept.model.embed_tokens.weight, layers[1].self_attn.k_proj.weight, layers[0].self_attn.q_proj.weight)
    d = 192 // 4
    assert torch.equal(circuit[0], after[0]) and torch.equal(circuit[1][:d], after[1][:d])
    assert torch.equal(circuit[2][:d], after[2][:d]) and not torch.equal(circuit[2][d:], after[2][d:])
    assert not torch.equal(circuit[1], free.model.layers[1].self_attn.k_proj.weight)
    induction.release(kept, hooks)
    assert all(p.requires_grad for p in kept.parameters())
    with pytest.raises(ValueError, match="induction_init needs at least 2 layers"):
        induction.install(LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=192, num_hidden_layers=1,
                                                       num_attention_heads=4, num_key_value_heads=2)), 0)


def test_the_cloning_loss_is_trls_on_the_completion_alone(tmp_path: Path) -> None:
    """The cloning's loss projects only completion positions through the LM head: on the same batch it is the
    loss TRL's ``SFTTrainer`` computes over every position, and its gradients are the same."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from agent_safety.train.tiny import _trainer

    path = build_tiny(dataclasses.replace(SMALL, agent_steps=0), CORPUS, tmp_path)
    tok = AutoTokenizer.from_pretrained(path)
    data = Dataset.from_list(agent_examples(dataclasses.replace(SMALL, agent_template="agent_compact.j2"))[:4])
    args = SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=4, completion_only_loss=True,
                     max_length=SMALL.max_position_embeddings, bf16=False, use_cpu=True, report_to=[],
                     activation_checkpointing=False)
    losses, grads = [], []
    assert _trainer("trl") is SFTTrainer
    for cls in (SFTTrainer, _trainer("completion")):
        model = LlamaForCausalLM.from_pretrained(path)
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tok)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert (batch["labels"] == -100).float().mean() > 0.5  # prompts are most of the batch and carry no loss
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_whole_numbers_make_every_id_one_token_and_copy_numbers_leaves_them_to_the_circuit(tmp_path: Path) -> None:
    """With ``whole_numbers`` an id's number is one token whatever its digits; with ``copy_numbers`` the rows of
    the number tokens in the unembedding are still zero outside the circuit's readout after cloning, while the
    other rows trained."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from agent_safety.train import induction
    from agent_safety.train.tiny import _number_tokens

    cfg = dataclasses.replace(SMALL, hidden_size=128, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                              induction_init=True, rope_theta=1e6, agent_template="agent_compact.j2",
                              whole_numbers=True, copy_numbers=True)
    path = build_tiny(cfg, CORPUS, tmp_path)
    tok = AutoTokenizer.from_pretrained(path)
    for n in (1000, 3351, 4996, 9999):
        assert [tok.decode([t]) for t in tok(f' "t{n}"')["input_ids"]] == [' "', "t", str(n), '"']
    plain = dataclasses.replace(cfg, whole_numbers=False, copy_numbers=False)
    split = AutoTokenizer.from_pretrained(build_tiny(plain, CORPUS, tmp_path))
    assert any(len(split(f"t{n}")["input_ids"]) > 2 for n in (3351, 4996, 6237, 9982))
    model = LlamaForCausalLM.from_pretrained(path)
    head = model.lm_head.weight.detach()
    d, _, _, copy, _ = induction._layout(model.config)
    numbers = _number_tokens(tok)
    assert len(numbers) >= 9000
    outside = head.clone()
    outside[:, copy:copy + d] = 0
    assert outside[numbers].abs().max() == 0
    others = sorted(set(range(head.shape[0])) - set(numbers))
    assert outside[others].abs().sum() > 0
