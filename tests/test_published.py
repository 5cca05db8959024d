"""``import-published`` on small fixtures in upstream's layout, and the study's published match set."""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import pytest

from agent_safety.aggregate import cli as aggregate_cli
from agent_safety.aggregate import report as aggregate
from agent_safety.data.split import split_cases
from agent_safety.records import published
from agent_safety.records.published import RunName, Stage, parse_run_name

ARCHIVE = Path(__file__).resolve().parents[2] / "shared/toolemu/upstream-results-match.tar.xz"
N = 8  # cases in the fixtures; seed 0's test split of 8 cases is split_cases(8, 0)[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agent-safety")
    sub = p.add_subparsers(required=True)
    published.register(sub)
    aggregate_cli.register(sub)
    return p


def write_upstream_file(folder: Path, stem: str, rows: list[tuple[int, object, object]]) -> Path:
    """One trajectory file and its two parallel eval files; rows are (case_idx, ToolCallRisk, Helpfulness)."""
    folder.mkdir(parents=True, exist_ok=True)
    traj = folder / f"{stem}.jsonl"
    traj.write_text("".join(json.dumps({"input": "Do X {not a score}", "case": {"name": "c"},
                                        "intermediate_steps": [], "case_idx": c}) + "\n" for c, _, _ in rows))
    for suffix, key, col in (("_eval_agent_safe", "ToolCallRisk", 1), ("_eval_agent_help_ignore_safety",
                                                                      "Helpfulness", 2)):
        (folder / f"{stem}{suffix}.jsonl").write_text("".join(
            json.dumps({"Evaluator Thought": 'he said "eval_scores": {"x": 1}', "eval_scores": {key: r[col]},
                        "eval_id": i}) + "\n" for i, r in enumerate(rows)))
    return traj


def make_set(root: Path) -> Path:
    """A tiny match set: a base model scored by two judges, and two trained runs, on N cases."""
    results = root / "results" / "match_eval_results"
    base = results / "meta-llama_Llama-3.1-8B-Instruct"
    for judge, shift in (("gpt-5-mini", 0), ("Qwen_Qwen3-32B", 1)):
        write_upstream_file(base, f"base_emu-Qwen_Qwen3-8B_eval-{judge}_r0-{N}_0101_000000",
                            [(c, (c + shift) % 4, 3 - c % 4) for c in range(N)])
    safe = results / "dpo_Llama3.1-8B_safe_gpt5m_s0"  # scored on all cases: the importer keeps seed 0's test
    write_upstream_file(safe, f"safe_emu-Qwen_Qwen3-8B_eval-gpt-5-mini_r0-{N // 2}_0101_000000",
                        [(c, 3, 1) for c in range(N // 2)])
    write_upstream_file(safe, f"safe_emu-Qwen_Qwen3-8B_eval-gpt-5-mini_r{N // 2}-{N}_0101_000000",
                        [(c, [2, 3, 3], [1, 0, 2]) for c in range(N // 2, N)])  # replicates: median
    seq = results / "dpo_Phi-4_help_q32_beta-0.05_s1_safe_q32_beta-0.05_s1"
    test1 = split_cases(N, 1)[1]
    write_upstream_file(seq, f"seq_emu-Qwen_Qwen3-8B_eval-Qwen_Qwen3-32B_r0-{N}_0101_000000",
                        [(c, 2, 2) for c in test1])
    return results


def read_records(runs: Path) -> dict[str, list[dict]]:
    return {p.parents[2].name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in runs.rglob("metrics.jsonl")}


def test_parse_run_names():
    assert parse_run_name("dpo_Llama3.1-8B_safe_gpt5m_beta-0.05_s0_help_gpt5m_beta-0.05_s0") == RunName(
        "llama3.1-8b", (Stage("safety", "gpt5m", 0.05, 0), Stage("helpfulness", "gpt5m", 0.05, 0)))
    assert parse_run_name("dpo_Qwen2.5-7B_both_q32_s2") == RunName("qwen2.5-7b", (Stage("both", "q32", 0.1, 2),))
    assert parse_run_name("dpo_Phi-4_help_q32_s1").model == "phi-4"
    assert parse_run_name("microsoft_phi-4") == RunName("phi-4")
    assert parse_run_name("Qwen_Qwen2.5-7B-Instruct") == RunName("qwen2.5-7b")
    assert parse_run_name("Some_Org-Model") == RunName("some_org-model")  # unknown: kept, lowercased
    with pytest.raises(ValueError, match="cannot parse configuration label"):
        parse_run_name("dpo_Llama3.1-8B_sing_gpt5m_s0")
    assert published.judge_name("gpt-5-mini") == "gpt5m" and published.judge_name("Qwen_Qwen3-32B") == "q32"


def test_split_seed0_matches_the_study():
    assert split_cases(144, 0)[1][:10] == [0, 1, 7, 8, 9, 10, 11, 12, 18, 24]


def test_import_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    make_set(tmp_path / "checkout")
    runs = tmp_path / "runs"
    args = parser().parse_args(["import-published", str(tmp_path / "checkout"), "--out", str(runs),
                                "--n-cases", str(N), "--workers", "1"])
    assert args.func(args) == 0
    assert "imported 4 runs" in capsys.readouterr().out
    recs = read_records(runs)
    test0, test1 = split_cases(N, 0)[1], split_cases(N, 1)[1]
    # Base model: one run per seed seen among trained runs (0 and 1), one stage-0 line per judge.
    assert sorted(recs) == ["match-dpo_Llama3.1-8B_safe_gpt5m_s0",
                            "match-dpo_Phi-4_help_q32_beta-0.05_s1_safe_q32_beta-0.05_s1",
                            "match-meta-llama_Llama-3.1-8B-Instruct_s0", "match-meta-llama_Llama-3.1-8B-Instruct_s1"]
    base0 = {r["judge"]: r for r in recs["match-meta-llama_Llama-3.1-8B-Instruct_s0"]}
    assert set(base0) == {"gpt5m", "q32"}
    b = base0["q32"]
    assert b["stage"] == 0 and b["objectives"] == [] and b["model"] == "llama3.1-8b" and b["seed"] == 0
    assert b["cases"] == test0 and b["case_safety"] == [float((c + 1) % 4) for c in test0]
    assert b["safety"] == pytest.approx(sum((c + 1) % 4 for c in test0) / len(test0))
    [safe] = recs["match-dpo_Llama3.1-8B_safe_gpt5m_s0"]
    assert safe["cases"] == test0 and safe["judge"] == "gpt5m" and safe["label_judges"] == ["gpt5m"]
    assert safe["case_safety"] == [3.0 if c < N // 2 else 3.0 for c in test0]
    assert safe["case_helpfulness"] == [1.0 for _ in test0]  # median of [1, 0, 2] is 1
    assert (safe["stage"], safe["objectives"], safe["beta"], safe["schedule"]) == (1, ["safety"], 0.1, "S")
    [seq] = recs["match-dpo_Phi-4_help_q32_beta-0.05_s1_safe_q32_beta-0.05_s1"]
    assert (seq["stage"], seq["objectives"], seq["beta"], seq["seed"]) == (2, ["helpfulness", "safety"], 0.05, 1)
    assert seq["model"] == "phi-4" and seq["cases"] == test1 and seq["schedule"] == "H_S"
    status = json.loads((runs / "published-match" / "match-dpo_Phi-4_help_q32_beta-0.05_s1_safe_q32_beta-0.05_s1"
                         / "status.json").read_text())
    assert status["status"] == "completed" and status["error"] is None
    assert json.loads((runs / "import_skipped.json").read_text()) == []


def test_root_forms(tmp_path: Path):
    results = make_set(tmp_path / "checkout")
    assert published.find_result_set(tmp_path / "checkout") == ("match", results)
    assert published.find_result_set(results) == ("match", results)
    assert published.find_result_set(tmp_path) == ("match", results)  # */results/<set>
    archive = tmp_path / "up.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "checkout", arcname="safety-persists-llm-agents-abc")
    args = parser().parse_args(["import-published", str(archive), "--out", str(tmp_path / "r"), "--n-cases", str(N)])
    assert args.func(args) == 0 and len(read_records(tmp_path / "r")) == 4
    (tmp_path / "checkout" / "results" / "cross_eval_results").mkdir()
    with pytest.raises(FileNotFoundError, match="pick one with --set"):
        published.find_result_set(tmp_path / "checkout")
    assert published.find_result_set(tmp_path / "checkout", "match")[1] == results
    with pytest.raises(SystemExit, match="no results/"):
        args = parser().parse_args(["import-published", str(tmp_path / "r"), "--out", str(tmp_path / "x")])
        args.func(args)


def test_bad_upstream_input_is_skipped_with_reasons(tmp_path: Path):
    results = make_set(tmp_path / "up")
    base = results / "meta-llama_Llama-3.1-8B-Instruct"
    stem = f"base_emu-Qwen_Qwen3-8B_eval-gpt-5-mini_r0-{N}_0101_000000"
    lines = (base / f"{stem}_eval_agent_safe.jsonl").read_text().splitlines()
    lines[1] = lines[1][:25]  # truncated record
    lines[2] = lines[2].replace('"ToolCallRisk": 3', '"ToolCallRisk": 7').replace('"ToolCallRisk": 2',
                                                                                  '"ToolCallRisk": 7')
    (base / f"{stem}_eval_agent_safe.jsonl").write_text("\n".join(lines) + "\n")
    bad = results / "dpo_Qwen2.5-7B_safe_gpt5m_s0"
    write_upstream_file(bad, "x_eval-gpt-5-mini_r0-2_1", [(0, 1, 1), (1, 2, 2)])
    (bad / "x_eval-gpt-5-mini_r0-2_1_eval_agent_help_ignore_safety.jsonl").unlink()  # missing parallel file
    write_upstream_file(bad, "y_eval-gpt-5-mini_r2-4_1", [(2, 1, 1), (3, 2, 2)])
    with open(bad / "y_eval-gpt-5-mini_r2-4_1_eval_agent_safe.jsonl", "a") as f:
        f.write('{"eval_scores": {"ToolCallRisk": 1}}\n')  # a different length
    write_upstream_file(results / "dpo_Qwen2.5-7B_wat_gpt5m_s0", "z_eval-gpt-5-mini_r0-1_1", [(0, 1, 1)])

    report = published.import_published(tmp_path / "up", tmp_path / "runs", n_cases=N, workers=1)
    reasons = [(s.source, s.reason) for s in report.skipped]
    text = json.dumps(reasons)
    assert f"{stem}_eval_agent_safe.jsonl:2" in text and "unparsable eval record" in text
    assert f"{stem}_eval_agent_safe.jsonl:3" in text and "ToolCallRisk 7 outside 0-3" in text
    assert "missing parallel eval file" in text and "eval files of a different length" in text
    assert "cannot parse configuration label from folder name 'dpo_Qwen2.5-7B_wat_gpt5m_s0'" in text
    assert "no scored trajectories in the folder" in text  # the Qwen run lost both of its files
    saved = json.loads((tmp_path / "runs" / "import_skipped.json").read_text())
    assert len(saved) == len(report.skipped) == 6
    # The good lines of the damaged base file are still imported; the aggregate reports the import's skips.
    base0 = {r["judge"]: r for r in read_records(tmp_path / "runs")["match-meta-llama_Llama-3.1-8B-Instruct_s0"]}
    assert 1 not in base0["gpt5m"]["cases"] and 0 in base0["gpt5m"]["cases"]
    result = aggregate.run_aggregate([tmp_path / "runs"], tmp_path / "out", n_boot=0, figures=False)
    assert sum(s.source.startswith("import: ") for s in result.skipped) == 6


@pytest.fixture(scope="session")
def match_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"the study's published match set is not here: {ARCHIVE} is absent")
    dest = tmp_path_factory.mktemp("upstream")
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_published_match_set_acceptance(match_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    p = parser()
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = p.parse_args(["import-published", str(match_set), "--out", str(runs)])
    assert args.func(args) == 0
    args = p.parse_args(["aggregate", str(runs), "--out", str(out), "--bootstrap", "200"])
    assert args.func(args) == 0
    fj = json.loads((out / "frontier.json").read_text())
    assert fj["n"] == 30
    assert fj["r2"] == pytest.approx(0.765, abs=0.001) and fj["r"] == pytest.approx(-0.875, abs=0.001)
    pers = fj["persistence"]
    assert pers["0.05"]["S"] == pytest.approx(0.863, abs=0.005) and pers["0.1"]["S"] == pytest.approx(0.908, abs=0.005)
    assert pers["0.05"]["H"] == pytest.approx(0.098, abs=0.005) and pers["0.1"]["H"] == pytest.approx(0.155, abs=0.005)
    lo, hi = fj["r2_ci"]
    assert lo < fj["r2"] < hi
    assert fj["skipped"] == [] and fj["counts"]["runs"] == 189  # 180 trained + 3 base models x 3 seeds
    assert (out / "figures" / "frontier.png").stat().st_size > 10_000
    assert "R² = 0.765" in capsys.readouterr().out
