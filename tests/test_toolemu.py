"""The study's published data: counts, split, formatting and skipped records, checked through ``data stats``.

Skipped with a visible reason when ``../shared/toolemu/upstream-data.tar.xz`` is absent. The archive is
extracted once per session with ``fetch`` (a few seconds).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import compose, shared_archive, stage_records

from agent_safety.cli import main
from agent_safety.data.fetch import fetch
from agent_safety.data.split import split_cases
from agent_safety.data.toolemu import Benchmark, load_benchmark
from agent_safety.pairs.formatting import completion_messages, prompt_messages
from agent_safety.pairs.rules import PairRule, build_pairs
from agent_safety.run.data_cli import format_stats

JUDGES = ("gpt5m", "q32")
OBJECTIVES = ("safety", "helpfulness", "both")
#: The spec's acceptance counts on the gpt5m data: (all 144 cases, seed 0's train split).
GPT5M_PAIRS = {"safety": (13_380, 7_132), "helpfulness": (12_889, 6_827), "both": (2_735, 1_514)}
#: Agent runs whose logs hold <think> blocks, and two that do not: a small root for the tiny-model dry run.
MINI_AGENTS = ("Qwen_Qwen3-14B", "gpt-5", "meta-llama_Llama-3.1-8B-Instruct")


@pytest.fixture(scope="session")
def toolemu_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The extracted, verified data; removed after the session (192 MB that pytest would otherwise keep)."""
    archive = shared_archive("upstream-data.tar.xz")
    base = tmp_path_factory.mktemp("toolemu")
    yield fetch(cache_dir=base, archive=archive, progress=False)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def benches(toolemu_root: Path) -> dict[str, Benchmark]:
    return {judge: load_benchmark(toolemu_root, judge) for judge in JUDGES}


def mini_root(src: Path, dst: Path, agents: tuple[str, ...], judge: str = "gpt5m") -> Path:
    """A copy of the data with only some agent runs (same layout): small enough to corrupt or train on."""
    shutil.copytree(src / "assets", dst / "assets")
    for agent in agents:
        shutil.copytree(src / "data" / "raw_data_by_eval" / judge / agent, dst / "data" / "raw_data_by_eval" / judge /
                        agent)
    return dst


def stats(capsys: pytest.CaptureFixture[str], *overrides: str) -> dict[str, Any]:
    assert main(["data", "stats", *overrides, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_gpt5m_acceptance_counts(toolemu_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = stats(capsys, "data=toolemu_gpt5m", f"data.root={toolemu_root}", "seed=0", f"paths.cache_dir={tmp_path}")
    assert {name: (p["all"], p["train"]) for name, p in out["pairs"].items()} == GPT5M_PAIRS
    assert (out["data"], out["judge"], out["seed"], out["on_error"]) == ("toolemu_gpt5m", "gpt5m", 0, "raise")
    assert out["cases"] == 144 and out["trajectories"] == 144 * 27
    assert out["trajectories_per_case"] == {"min": 27, "max": 27}
    assert out["split"] == {"train": 72, "test": 72}
    assert out["skipped"] == 0 and out["skipped_records"] == []
    for metric in ("safety", "helpfulness"):
        assert list(out["scores"][metric]) == ["0", "1", "2", "3"]
        assert sum(out["scores"][metric].values()) == 144 * 27

    table = format_stats(out)  # what `data stats` prints without --json
    assert re.search(r"^safety\s+13,380\s+7,132\s+6,248$", table, re.M)
    assert re.search(r"^both\s+2,735\s+1,514\s+1,221$", table, re.M)
    assert "trajectories  3,888 (27 per case)" in table


def test_q32_counts_are_the_pair_rule(toolemu_root: Path, benches: dict[str, Benchmark],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = stats(capsys, "data=toolemu_q32", f"data.root={toolemu_root}", "seed=0")
    cfg: Any = compose(["data=toolemu_q32"])
    bench = benches["q32"]
    train, test = split_cases(bench.n_cases, 0)
    for name in OBJECTIVES:
        rule = PairRule.from_config(cfg.objectives[name])
        expected = {split: len(build_pairs(bench.trajectories, rule, cases))
                    for split, cases in (("all", None), ("train", train), ("test", test))}
        assert out["pairs"][name] == expected
        assert min(expected.values()) > 0
    assert out["judge"] == "q32" and out["trajectories"] == 144 * 27


def test_seed0_split(benches: dict[str, Benchmark]) -> None:
    train, test = split_cases(benches["gpt5m"].n_cases, 0)
    assert test[:10] == [0, 1, 7, 8, 9, 10, 11, 12, 18, 24]
    assert sorted(train + test) == list(range(144))


@pytest.mark.parametrize("judge", JUDGES)
def test_trajectories_per_judge(benches: dict[str, Benchmark], judge: str) -> None:
    """144 cases x 27 agent runs (25 models, some at two quantizations), every one scored on both metrics."""
    bench = benches[judge]
    assert bench.judge == judge and sorted(bench.cases) == list(range(144))
    assert len(bench.trajectories) == 3_888
    assert {len(v) for v in bench.by_case().values()} == {27}
    assert all(0 <= t.scores[m] <= 3 for t in bench.trajectories for m in ("safety", "helpfulness"))
    assert bench.skipped == []


def test_every_example_has_the_dpo_structure(benches: dict[str, Benchmark]) -> None:
    """System (role, ReAct, the case's tools) + instruction; assistant/Observation turns; final answer."""
    bench = benches["gpt5m"]
    assert any("<think>" in t.final for t in bench.trajectories)  # the stripping below is exercised
    for t in bench.trajectories:
        case = bench.cases[t.case_idx]
        system, user = prompt_messages(case, bench.toolkits)
        assert (system["role"], user["role"]) == ("system", "user")
        assert user["content"] == case["User Instruction"]
        for kit in case["Toolkits"]:
            spec = bench.toolkits[kit]
            for tool in spec["tools"]:
                assert f"- {spec['name_for_model']}{tool['name']}:" in system["content"]
        completion = completion_messages(t)
        roles = [m["role"] for m in completion]
        assert roles == ["assistant", "user"] * len(t.steps) + ["assistant"]
        assert all(m["content"].startswith("Observation:") for m in completion if m["role"] == "user")
        assert all("Action:" in m["content"] for m in completion[:-1:2])
        assert "Final Answer:" in completion[-1]["content"]
        assert not any("<think>" in m["content"] for m in completion)


@pytest.mark.parametrize("judge", JUDGES)
def test_no_reasoning_is_left(benches: dict[str, Benchmark], judge: str) -> None:
    bench = benches[judge]
    left = [t.source for t in bench.trajectories for m in completion_messages(t) if "</think>" in m["content"]]
    assert left == []


def test_dry_run_prints_one_decoded_example(toolemu_root: Path, tmp_path: Path, cache_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = mini_root(toolemu_root, tmp_path / "mini", MINI_AGENTS)
    bench = load_benchmark(root, "gpt5m")
    train, _ = split_cases(bench.n_cases, 0)
    pairs = build_pairs(bench.trajectories, PairRule(("safety",)), train)
    n = next(i for i, (c, r) in enumerate(pairs)
             if any("<think>" in bench.trajectories[k].final for k in (c, r)))
    chosen, rejected = pairs[n]
    case = bench.cases[bench.trajectories[chosen].case_idx]

    assert main(["data", "example", "data=toolemu_gpt5m", f"data.root={root}", f"paths.cache_dir={cache_dir}",
                 "model=tiny", "objective=safety", "--pair", str(n)]) == 0
    out = capsys.readouterr().out
    meta, rest = out.split("=== PROMPT ===\n")
    prompt, rest = rest.split("\n=== CHOSEN ===\n")
    chosen_text, rest = rest.split("\n=== REJECTED ===\n")
    rejected_text, footer = rest.split("\n=== safety pair ")
    assert json.loads(meta)["chosen"] == bench.trajectories[chosen].source
    assert prompt.startswith("<|system|>\n") and prompt.endswith("<|assistant|>\n")
    assert f"<|user|>\n{case['User Instruction']}<|end|>" in prompt
    assert all(f"{bench.toolkits[kit]['name_for_model']}" in prompt for kit in case["Toolkits"])
    for text, k in ((chosen_text, chosen), (rejected_text, rejected)):
        n_steps = len(bench.trajectories[k].steps)
        assert re.findall(r"<\|(user|assistant|system)\|>\n", text) == ["user", "assistant"] * n_steps
        assert text.count("<|user|>\nObservation:") == n_steps
        last = text.rsplit("<|assistant|>\n", 1)[-1]
        assert "Final Answer:" in last and last.rstrip().endswith("<|end|>")
        assert "<think>" not in text and "</think>" not in text
    assert footer.startswith(f"{n} of {len(pairs):,} (train split, seed 0)")


def test_on_error_skip_counts(toolemu_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = mini_root(toolemu_root, tmp_path / "mini", ("gpt-5",))
    run = sorted((root / "data" / "raw_data_by_eval" / "gpt5m" / "gpt-5").glob("*[0-9].jsonl"))[0]
    safe = run.with_name(f"{run.stem}_eval_agent_safe.jsonl")
    lines = run.read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"  # line 3: truncated JSON
    run.write_text("".join(lines))
    evals = safe.read_text().splitlines(keepends=True)
    record = json.loads(evals[4])
    record["eval_scores"]["ToolCallRisk"] = 7  # line 5: a score outside 0-3
    evals[4] = json.dumps(record) + "\n"
    safe.write_text("".join(evals))

    base = ["data=toolemu_gpt5m", f"data.root={root}", f"paths.cache_dir={tmp_path}"]
    assert main(["data", "stats", *base]) == 2  # on_error=raise: stops at the first bad record, naming it
    assert f"{safe}:5: score ToolCallRisk=7.0 outside 0-3" in capsys.readouterr().err

    out = stats(capsys, *base, "data.on_error=skip")
    assert out["on_error"] == "skip" and out["skipped"] == 2
    assert out["trajectories"] == 144 - 2
    records = out["skipped_records"]
    assert len(records) == 2
    assert any(r.startswith(f"{run}:3: unparsable JSON") for r in records)
    assert any(r.startswith(f"{safe}:5: score ToolCallRisk=7.0 outside 0-3") for r in records)
    assert main(["data", "stats", *base, "data.on_error=skip", "objective=both"]) == 0
    table = capsys.readouterr().out
    assert "skipped       2 records (data.on_error=skip)" in table and f"{safe}:5:" in table
    pairs_table = table.split("\npairs ", 1)[1]
    assert re.search(r"^both\s", pairs_table, re.M) and not re.search(r"^safety\s", pairs_table, re.M)


@pytest.mark.slow
def test_tiny_run_on_the_study_data_writes_its_records(toolemu_root: Path, tmp_path: Path, cache_dir: Path) -> None:
    """model=tiny data=toolemu_gpt5m schedule=S on a few pairs, offline, end to end."""
    from agent_safety.run.schedule import run_schedule

    root = mini_root(toolemu_root, tmp_path / "mini", MINI_AGENTS)
    cfg = compose(["data=toolemu_gpt5m", f"data.root={root}", "schedule=S", "trainer.max_pairs=16",
                   "trainer.max_steps=2", "eval.max_cases=6", "logger=none", "threads=1",
                   f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={cache_dir}"])
    result = run_schedule(cfg)
    rows = stage_records(result.run_dir)
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "completed"
    assert [r["stage"] for r in rows] == [0, 1]
    assert rows[1]["judge"] == "gpt5m" and rows[1]["data"] == "toolemu_gpt5m" and rows[1]["objectives"] == ["safety"]
    assert rows[1]["pairs_used"] + rows[1]["pairs_dropped"] == 16 and rows[1]["pairs_used"] > 0
    assert rows[0]["n_test_cases"] == 6 and all(0 <= r["safety"] <= 3 for r in rows)
    assert (result.run_dir / "stage_1" / "model" / "model.safetensors").exists()
