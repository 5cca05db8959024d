"""Stage models as stacked LoRA adapters: the stacked adapter of stage k is the merged model after stage k.

Tolerances: float32 throughout. The merged model adds each stage's ΔW to the weights one stage at a time, the
stacked adapter adds their sum once, so they differ by float32 rounding of the weights (about 1e-7 relative)
carried through the layers; logits agree to 1e-4 absolute on the tiny model (logits of order 10).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import compose, stage_records

from agent_safety.records.identity import run_id
from agent_safety.train.stacked import scaling, stack, write_stacked

LOGIT_ATOL = 1e-4


def _lora(out_dim: int, in_dim: int, r: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, in_dim, generator=g), torch.randn(out_dim, r, generator=g)


def test_stack_is_the_sum_of_the_parts_deltas_with_zero_blocks_for_modules_a_part_leaves_out() -> None:
    q, v = "base_model.model.layers.0.q_proj", "base_model.model.layers.0.v_proj"
    a1, b1 = _lora(6, 5, 2, 1)
    a2, b2 = _lora(6, 5, 3, 2)
    va2, vb2 = _lora(4, 5, 3, 3)
    parts = [({f"{q}.lora_A.weight": a1, f"{q}.lora_B.weight": b1}, 2.0),
             ({f"{q}.lora_A.weight": a2, f"{q}.lora_B.weight": b2, f"{v}.lora_A.weight": va2,
               f"{v}.lora_B.weight": vb2}, 0.5)]
    out = stack(parts)
    assert out[f"{q}.lora_A.weight"].shape == (5, 5) and out[f"{q}.lora_B.weight"].shape == (6, 5)
    delta_q = out[f"{q}.lora_B.weight"] @ out[f"{q}.lora_A.weight"]
    torch.testing.assert_close(delta_q, 2.0 * b1 @ a1 + 0.5 * b2 @ a2, atol=1e-5, rtol=1e-6)
    delta_v = out[f"{v}.lora_B.weight"] @ out[f"{v}.lora_A.weight"]
    torch.testing.assert_close(delta_v, 0.5 * vb2 @ va2, atol=1e-5, rtol=1e-6)


def test_scaling_is_peft_s_and_patterns_refuse_to_stack() -> None:
    assert scaling({"r": 16, "lora_alpha": 32}, "x") == 2.0
    assert scaling({"r": 16, "lora_alpha": 32, "use_rslora": True}, "x") == pytest.approx(32 / math.sqrt(16))
    with pytest.raises(ValueError, match="x: per-module rank_pattern"):
        scaling({"r": 16, "lora_alpha": 32, "rank_pattern": {"q_proj": 8}}, "x")


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _random_adapters(base: Path, out: Path, n: int, r: int = 16, alpha: int = 32) -> list[Path]:
    """``n`` PEFT adapters of the base with random A and B (PEFT's own init keeps B zero), written by PEFT."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for k in range(n):
        torch.manual_seed(100 + k)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                                init_lora_weights=False, task_type="CAUSAL_LM"))
        with torch.no_grad():  # deltas of a trained stage's size, not PEFT's unit-variance test init
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.01)
        peft.save_pretrained(out / f"adapter_{k + 1}")
        dirs.append(out / f"adapter_{k + 1}")
    return dirs


def _stacked_equals_sequential_merges(base: Path, tmp: Path, n: int) -> float:
    """Largest |logit| difference between merging ``n`` random adapters one after another and merging the
    stacked adapter of all of them once (and serving it unmerged, as vLLM does)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agent_safety.train.stacked import merged_from_stacked

    adapters = _random_adapters(base, tmp, n)
    stacked = [write_stacked([adapters[0]], tmp / "stacked_1")]
    for k in range(1, n):
        stacked.append(write_stacked([stacked[-1], adapters[k]], tmp / f"stacked_{k + 1}"))
    assert json.loads((stacked[-1] / "adapter_config.json").read_text())["r"] == 16 * n
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11, 4, 8]])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for a in adapters:
        model = PeftModel.from_pretrained(model, str(a)).merge_and_unload()
    merged = _logits(model, ids)
    once = _logits(merged_from_stacked(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), stacked[-1]),
                   ids)
    served = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                               str(stacked[-1])), ids)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), ids)
    assert (merged - base_logits).abs().max() > 100 * LOGIT_ATOL  # the stages change the model
    return max((merged - once).abs().max().item(), (merged - served).abs().max().item())


def test_stacked_random_adapters_equal_sequential_merges_on_the_tiny_model(make_cfg, cache_dir: Path,
                                                                            tmp_path: Path) -> None:
    from agent_safety.data.benchmark import load_data
    from agent_safety.train.models import resolve_base

    cfg = make_cfg()
    base, _ = resolve_base(cfg.model, load_data(cfg.data, cache_dir), cache_dir)
    assert _stacked_equals_sequential_merges(Path(base), tmp_path, 3) < LOGIT_ATOL


@pytest.mark.slow
def test_stacked_random_adapters_equal_sequential_merges_on_smollm2(make_cfg, cache_dir: Path,
                                                                     tmp_path: Path) -> None:
    import importlib.util

    from agent_safety.train.models import resolve_base

    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed: no SmolLM2 conversion")
    cfg = make_cfg("model=smollm2-135m")
    try:
        base, _ = resolve_base(cfg.model, None, cache_dir)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    # SmolLM2's logits are of order 20-30; 30 layers of float32 rounding: 1e-3 absolute
    assert _stacked_equals_sequential_merges(Path(base), tmp_path, 2) < 1e-3


QUICK = ["trainer.max_steps=3", "trainer.max_pairs=12", "eval.max_cases=4", "logger=none", "schedule=S_H"]


@pytest.mark.slow
def test_a_trained_run_s_stacked_adapters_equal_its_merged_stages_and_save_merged_false_trains_the_same(
        make_cfg, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from agent_safety.run.schedule import run_schedule
    from agent_safety.train.export import export_stage
    from agent_safety.train.stacked import merged_from_stacked

    merged_cfg = make_cfg(*QUICK, runs=tmp_path / "merged")
    lean_cfg = make_cfg(*QUICK, "trainer.save_merged=false", runs=tmp_path / "lean")
    from agent_safety.config.schema import to_container

    assert run_id(to_container(merged_cfg)) == run_id(to_container(lean_cfg))  # not part of the run id
    merged_run, lean_run = run_schedule(merged_cfg), run_schedule(lean_cfg)
    base = json.loads((merged_run.run_dir / "stage_1" / "stacked" / "adapter_config.json").read_text())[
        "base_model_name_or_path"]
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11, 4, 8]])
    for k in (1, 2):
        stage = merged_run.run_dir / f"stage_{k}"
        want = _logits(AutoModelForCausalLM.from_pretrained(stage / "model", dtype=torch.float32), ids)
        got = _logits(merged_from_stacked(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                          stage / "stacked"), ids)
        assert (want - got).abs().max().item() < LOGIT_ATOL
        assert not (lean_run.run_dir / f"stage_{k}" / "model").exists()
        assert (lean_run.run_dir / f"stage_{k}" / "stacked" / "adapter_model.safetensors").exists()
    # the same training either way: same scores, and the exported stage is the saved one
    assert [r["safety"] for r in stage_records(lean_run.run_dir)] == pytest.approx(
        [r["safety"] for r in stage_records(merged_run.run_dir)], abs=1e-6)
    out = export_stage(lean_run.run_dir, 2, tmp_path / "exported")
    want = _logits(AutoModelForCausalLM.from_pretrained(merged_run.run_dir / "stage_2" / "model"), ids)
    assert (_logits(AutoModelForCausalLM.from_pretrained(out), ids) - want).abs().max().item() < LOGIT_ATOL
    assert (out / "tokenizer.json").exists() or (out / "tokenizer_config.json").exists()


def test_export_names_what_is_missing(tmp_path: Path) -> None:
    from agent_safety.train.export import export_stage

    with pytest.raises(FileNotFoundError, match="not a run dir"):
        export_stage(tmp_path, 1)
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(FileNotFoundError, match="stage_3/stacked: stage 3 has no stacked adapter"):
        export_stage(tmp_path, 3)


def test_save_merged_is_defaulted_and_not_hashed() -> None:
    from agent_safety.config.schema import to_container

    cfg = compose()
    assert cfg.trainer.save_merged is True
    assert run_id(to_container(compose(["trainer.save_merged=false"]))) == run_id(to_container(cfg))


def test_serving_a_stage_as_its_adapter_names_what_is_missing(tmp_path: Path) -> None:
    from agent_safety.config.schema import AgentConfig
    from agent_safety.evaluate.generative.agent import lora_rank_slot, make_agent

    def agent(backend: str, adapter: str | None, stage: int = 1) -> object:
        cfg = AgentConfig(backend=backend, adapters=True)
        return make_agent(cfg, str(tmp_path), lambda: None, None, tmp_path, "run", stage, adapter=adapter)

    with pytest.raises(ValueError, match="stage 2 has no stacked adapter"):
        agent("openai", None, stage=2)
    with pytest.raises(ValueError, match="needs eval.agent.backend=openai or vllm"):
        agent("transformers", str(tmp_path))
    assert [lora_rank_slot(r) for r in (16, 32, 48, 64)] == [16, 32, 64, 64]
    with pytest.raises(ValueError, match="rank 600 is above vLLM's largest max_lora_rank"):
        lora_rank_slot(600)
