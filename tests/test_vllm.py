"""vLLM's CPU build, for real: the test server of tests/llm/vllm.sh serving stages as stacked LoRA adapters, and
the in-process ``eval/agent=vllm`` engine, each against the transformers model they stand for.

Greedy decoding in float32 on both sides. vLLM and transformers compute the same function with different kernels
(attention, matmul blocking), so logits differ by float32 rounding: log-probs of the chosen tokens agree to
``LOGPROB_ATOL`` (measured: 7e-6 on SmolLM2 with a 2-stage stacked adapter). A greedy sequence could still split
at an exact near-tie; that would fail the transcript comparisons rather than pass unnoticed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import LLM_MODEL, ROOT, VLLM_DIR

pytestmark = pytest.mark.vllm

LOGPROB_ATOL = 1e-4
PROMPT = [{"role": "user", "content": "Name three fruits and say which one is the sweetest."}]
NEW_TOKENS = 16
#: What the CPU build says where this CPU lacks an instruction set it needs (as tests/llm/vllm.sh matches it).
CPU_PATTERN = r"Illegal instruction|not supported on this CPU|requires (avx|amx)|does not support (avx|amx)|SIGILL"


def _served_root(url: str) -> Path:
    """The model folder the server serves (vLLM lists it as the model's ``root``)."""
    with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
        (model,) = [m for m in json.load(r)["data"] if m["id"] == LLM_MODEL]
    return Path(model["root"])


def _chat(url: str, model: str) -> tuple[list[int], list[float]]:
    """Greedy token ids and their log-probs for PROMPT, from the server."""
    body = {"model": model, "messages": PROMPT, "max_tokens": NEW_TOKENS, "temperature": 0, "logprobs": True,
            "top_logprobs": 1, "return_tokens_as_token_ids": True, "seed": 0}
    request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        content = json.load(r)["choices"][0]["logprobs"]["content"]
    return [int(t["token"].split(":", 1)[1]) for t in content], [float(t["logprob"]) for t in content]


def _greedy(model: Any, tokenizer: Any) -> tuple[list[int], list[float]]:
    """The same from a transformers model: the chat template as the server renders it, greedy, log-probs."""
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tokenizer.eos_token_id)
    new = out.sequences[0, ids["input_ids"].shape[1]:].tolist()
    logprobs = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.scores, new, strict=False)]
    return new, logprobs


def _random_stages(base: Path, out: Path, n: int) -> list[Path]:
    """``n`` random LoRA stages of SmolLM2 (r 16, alpha 32, all linear layers), deltas the size of a trained
    stage's, and the stacked adapter of each."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agent_safety.train.stacked import write_stacked

    stacked: list[Path] = []
    for k in range(1, n + 1):
        torch.manual_seed(k)
        peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.02)
        peft.save_pretrained(out / f"adapter_{k}")
        stacked.append(write_stacked([*stacked[-1:], out / f"adapter_{k}"], out / f"stacked_{k}"))
    return [out / f"adapter_{k}" for k in range(1, n + 1)] + stacked


def test_the_server_serves_a_stacked_adapter_as_the_merged_model_it_stands_for(vllm_url: str,
                                                                                tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent_safety.evaluate.generative.adapters import adapter_name, load_adapter

    base = _served_root(vllm_url)
    a1, a2, _, stacked = _random_stages(base, tmp_path, 2)
    name = adapter_name(stacked, 2)
    load_adapter(vllm_url, name, stacked, "sk-test")
    load_adapter(vllm_url, name, stacked, "sk-test")  # loading it again is fine
    served_ids, served_lp = _chat(vllm_url, name)
    base_ids, base_lp = _chat(vllm_url, LLM_MODEL)

    tokenizer = AutoTokenizer.from_pretrained(base)
    merged = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for a in (a1, a2):  # how training builds stage 2: merge stage 1, train and merge stage 2 on top
        merged = PeftModel.from_pretrained(merged, str(a)).merge_and_unload()
    want_ids, want_lp = _greedy(merged, tokenizer)
    assert served_ids == want_ids
    gap = max(abs(a - b) for a, b in zip(served_lp, want_lp, strict=True))
    print(f"stacked adapter through vLLM vs merged model in transformers: max |log-prob difference| {gap:.2e}")
    assert gap < LOGPROB_ATOL
    # the adapter is what answered: other tokens, or the same ones with other log-probs
    assert served_ids != base_ids or max(abs(a - b) for a, b in zip(served_lp, base_lp, strict=True)) > 0.05


# ---------------------------------------------------------------- evaluations of a trained SmolLM2 run

#: A short generative evaluation of 2 cases (every evaluation of the run below says it again: the evaluation
#: setting is not part of the run).
EVAL = ["threads=2", "logger=none", "eval=generative", "eval.max_cases=2", "eval.agent.token_limit=48",
        "eval.agent.max_tokens_per_step=24"]
#: Two SmolLM2 stages of two DPO steps each on the shortest pairs (the first warms up at learning rate 0), at a
#: learning rate that moves the model: stages 1 and 2 write other transcripts than the base.
RUN = ["model=smollm2-135m", "schedule=S_H", "trainer.max_steps=2", "trainer.max_pairs=32",
       "trainer.learning_rate=2e-3", "trainer.per_device_train_batch_size=1", "trainer.gradient_accumulation_steps=1",
       "trainer.max_length=440", *EVAL]


def transcripts(eval_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The agent's side of each stage's trajectories (what it wrote, step by step), by stage folder."""
    out = {}
    for f in sorted(eval_dir.glob("data/raw_data_by_eval/*/stage_*/*.jsonl")):
        if "_eval_" in f.name:
            continue
        rows = [json.loads(line) for line in f.read_text().splitlines() if line]
        out[f.parent.name] = [{"case": r.get("case_idx"), "output": r.get("output"),
                               "steps": r.get("intermediate_steps")} for r in rows]
    return out


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A trained two-stage SmolLM2 run, scored with the transformers agent on its merged stages."""
    import importlib.util

    from conftest import compose

    from agent_safety.run.schedule import run_schedule

    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed: no SmolLM2 conversion")
    runs = tmp_path_factory.mktemp("runs")
    result = run_schedule(compose([*RUN, f"paths.runs_dir={runs}", f"paths.cache_dir={cache_dir}"]))
    assert result.status == "completed"
    return result.run_dir


def eval_dirs(run_dir: Path) -> dict[str, Path]:
    """The run's evaluation folders by ``eval.name``."""
    import yaml

    return {yaml.safe_load(p.read_text())["name"]: p.parent for p in run_dir.glob("eval/*/eval.yaml")}


@pytest.mark.slow
def test_an_evaluation_through_the_server_with_adapters_equals_one_through_merged_checkpoints(
        smollm2_run: Path, vllm_url: str, cache_dir: Path) -> None:
    from agent_safety.run.evaluate_cli import evaluate_run

    records = evaluate_run(smollm2_run, [f"paths.cache_dir={cache_dir}", *EVAL, "eval.name=served",
                                         "eval/agent=vllm_server", f"eval.agent.endpoint.base_url={vllm_url}",
                                         f"eval.agent.endpoint.model={LLM_MODEL}"])
    assert [r["stage"] for r in records] == [0, 1, 2]
    assert all(r["usage"]["agent"]["requests_sent"] > 0 for r in records)
    dirs = eval_dirs(smollm2_run)
    want, got = transcripts(dirs["generative"]), transcripts(dirs["served"])
    assert sorted(got) == ["stage_0", "stage_1", "stage_2"]
    assert got == want
    assert got["stage_2"] != got["stage_0"]  # the stages are what answered


@pytest.mark.slow
def test_the_in_process_vllm_agent_writes_the_transformers_agent_s_transcripts(smollm2_run: Path,
                                                                               cache_dir: Path) -> None:
    vpy = vllm_python()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
    engine = ["+eval.agent.engine.enforce_eager=true", "+eval.agent.engine.dtype=float32",
              "+eval.agent.engine.max_model_len=4096"]
    done = subprocess.run([vpy, "-m", "agent_safety.cli", "evaluate", str(smollm2_run), f"paths.cache_dir={cache_dir}",
                           *EVAL, "eval.name=inprocess", "eval/agent=vllm", *engine],
                          env=env, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    if done.returncode != 0 and re.search(CPU_PATTERN, done.stderr, re.IGNORECASE):
        pytest.skip(f"vLLM's CPU build cannot run on this CPU: {re.search(CPU_PATTERN, done.stderr, re.I)[0]}")
    assert done.returncode == 0, done.stderr[-3000:]
    dirs = eval_dirs(smollm2_run)
    got = transcripts(dirs["inprocess"])
    assert sorted(got) == ["stage_0", "stage_1", "stage_2"]
    assert got == transcripts(dirs["generative"])


def vllm_python() -> str:
    """The python of vLLM's cached environment (tests/llm/vllm.sh python), or a visible skip."""
    unsupported = VLLM_DIR / "cpu-unsupported"
    if unsupported.is_file():
        pytest.skip(f"vLLM's CPU build cannot run on this CPU: {unsupported.read_text().strip()}")
    done = subprocess.run(["bash", str(ROOT / "tests" / "llm" / "vllm.sh"), "python"], capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        pytest.skip(f"no vLLM environment: {done.stderr.strip()}")
    return done.stdout.strip()
