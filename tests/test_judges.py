"""How far judges agree: the statistics against hand-computed examples, ``agent-safety judges`` on the study's
data (skipped with a reason when ``../shared`` is absent), and ``evaluate --judge-only`` through the rule judge
on the synthetic benchmark and through the local LLM server on published trajectories."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LLM_MODEL, shared_archive

from agent_safety.aggregate.agreement import (
    compare,
    confusion,
    labels_of,
    metric_agreement,
    quadratic_kappa,
    score_grid,
    trajectory_key,
)
from agent_safety.cli import main
from agent_safety.data.toolemu import Trajectory

#: A hand example: six trajectories scored by judges a and b.
HAND_A = [0, 1, 2, 3, 3, 2]
HAND_B = [0, 2, 2, 3, 1, 2]


def test_kappa_and_confusion_match_the_hand_computed_example() -> None:
    """Pairs (a, b): (0,0) (1,2) (2,2) (3,3) (3,1) (2,2).

    exact: 4 of 6 agree = 2/3; within one: all but (3,1) = 5/6; means 11/6 and 10/6.
    Quadratic weights w_ij = (i - j)^2. Observed weighted disagreement per pair: (0+1+0+0+4+0)/6 = 30/36.
    Expected under independence: marginals a = (1, 1, 2, 2) and b = (1, 1, 3, 1) over scores 0..3;
    sum_ij a_i b_j (i-j)^2 = 1*(0+1+12+9) + 1*(1+0+3+4) + 2*(4+1+0+1) + 2*(9+4+3+0) = 22 + 8 + 12 + 32 = 74,
    over n^2 = 36: 74/36. kappa = 1 - 30/74 = 22/37 = 0.5946.
    """
    assert quadratic_kappa(HAND_A, HAND_B) == pytest.approx(22 / 37)
    assert quadratic_kappa(HAND_B, HAND_A) == pytest.approx(22 / 37)  # symmetric
    s = metric_agreement(HAND_A, HAND_B)
    assert (s.n, s.exact, s.within_one) == (6, pytest.approx(2 / 3), pytest.approx(5 / 6))
    assert (s.mean_a, s.mean_b) == (pytest.approx(11 / 6), pytest.approx(10 / 6))
    assert s.grid == [0.0, 1.0, 2.0, 3.0]
    assert s.matrix == [[1, 0, 0, 0],   # a=0: b=0
                        [0, 0, 1, 0],   # a=1: b=2
                        [0, 0, 2, 0],   # a=2: b=2 twice
                        [0, 1, 0, 1]]   # a=3: b=1 and b=3


def test_kappa_edge_cases() -> None:
    assert quadratic_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    # b reverses a: observed mean (3^2+1+1+3^2)/4 = 5, expected var 1.25 + 1.25 = 2.5 -> 1 - 5/2.5 = -1
    assert quadratic_kappa([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)
    assert quadratic_kappa([2, 2, 2], [2, 2, 2]) is None  # one score from both: undefined, not 1 or 0
    # b gives one score whatever a says: no agreement beyond chance
    assert quadratic_kappa([0, 1, 2, 3], [2, 2, 2, 2]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no paired scores"):
        quadratic_kappa([], [])
    with pytest.raises(ValueError, match="differ in length"):
        quadratic_kappa([1], [1, 2])


def _textbook_kappa(a: list[float], b: list[float]) -> float:
    """Cohen's weighted kappa from the confusion matrix and its marginals, weights (g_i - g_j)^2 on the grid."""
    grid = score_grid(a + b)
    m = confusion(a, b, grid)
    n = len(a)
    rows = [sum(r) for r in m]
    cols = [sum(m[i][j] for i in range(len(grid))) for j in range(len(grid))]
    w = [[(gi - gj) ** 2 for gj in grid] for gi in grid]
    observed = sum(w[i][j] * m[i][j] for i in range(len(grid)) for j in range(len(grid))) / n
    expected = sum(w[i][j] * rows[i] * cols[j] for i in range(len(grid)) for j in range(len(grid))) / n ** 2
    return 1 - observed / expected


def test_the_closed_form_equals_the_matrix_formula_with_halves_on_the_grid() -> None:
    rng = random.Random(7)
    halves = [x / 2 for x in range(7)]
    a = [rng.choice(halves) for _ in range(200)]
    b = [min(3.0, max(0.0, x + rng.choice([-1, -0.5, 0, 0, 0.5, 1]))) for x in a]
    assert quadratic_kappa(a, b) == pytest.approx(_textbook_kappa(a, b))
    s = metric_agreement(a, b)
    assert s.grid == halves and sum(map(sum, s.matrix)) == 200
    assert metric_agreement([0, 3], [0, 3]).grid == [0.0, 1.0, 2.0, 3.0]  # integers: no half rows
    with pytest.raises(ValueError, match=r"score 1\.25 is not on the 0-3 scale"):
        score_grid([1.25])


def _traj(source: str, agent: str, case: int, safety: float | None, helpfulness: float = 2.0) -> Trajectory:
    return Trajectory(case_idx=case, agent=agent, steps=(), final="Final Answer: done",
                      scores={"safety": safety, "helpfulness": helpfulness}, source=source)


def test_trajectories_match_across_judges_by_file_line_and_case() -> None:
    gpt = "/d/raw_data_by_eval/gpt5m/{a}/{a}_emu-Qwen_Qwen3-8B_eval-gpt-5-mini_int8_r0-15_0102_170035.jsonl:{n}"
    q32 = "/d/raw_data_by_eval/q32/{a}/{a}_emu-Qwen_Qwen3-8B_eval-Qwen_Qwen3-32B_int8_r0-15_0102_170035.jsonl:{n}"
    nested = "Qwen_Qwen3-32Bnt/Qwen_Qwen3-32Bnt"  # where the study filed one gpt5m run
    a = [_traj(gpt.format(a=nested, n=1), nested, 0, 3), _traj(gpt.format(a=nested, n=2), nested, 1, 1),
         _traj(gpt.format(a=nested, n=3), nested, 2, 0)]
    b = [_traj(q32.format(a="Qwen_Qwen3-32Bnt", n=1), "Qwen_Qwen3-32Bnt", 0, 3),
         _traj(q32.format(a="Qwen_Qwen3-32Bnt", n=2), "Qwen_Qwen3-32Bnt", 1, None),  # q32 gave no score
         _traj(q32.format(a="Qwen_Qwen3-32Bnt", n=3), "Qwen_Qwen3-32Bnt", 5, 0)]  # another case on that line
    assert trajectory_key(a[0]) == trajectory_key(b[0])
    c = compare("gpt5m", labels_of(a, "a"), "q32", labels_of(b, "b"))
    assert (c.matched, c.only_a, c.only_b) == (2, 1, 1)
    assert c.metrics["safety"].n == 1 and c.unscored["safety"] == {"gpt5m": 0, "q32": 1}
    assert c.metrics["helpfulness"].n == 2
    with pytest.raises(ValueError, match="two trajectories with the identity"):
        labels_of([a[0], a[0]], "a")
    with pytest.raises(ValueError, match="no trajectory of gpt5m"):
        compare("gpt5m", labels_of(a[2:], "a"), "q32", labels_of(b[:1], "b"))


# --------------------------------------------------------------------------------------- the study's data

#: Measured on the published data (3,888 trajectories): rows gpt5m's score, columns q32's.
STUDY_CONFUSION = {
    "safety": [[217, 559, 157, 26], [50, 613, 506, 148], [4, 130, 427, 180], [5, 85, 76, 705]],
    "helpfulness": [[142, 95, 73, 134], [37, 89, 120, 116], [32, 89, 375, 370], [24, 56, 276, 1860]],
}


@pytest.fixture(scope="module")
def toolemu_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from agent_safety.data.fetch import fetch

    archive = shared_archive("upstream-data.tar.xz")
    base = tmp_path_factory.mktemp("toolemu-judges")
    yield fetch(cache_dir=base, archive=archive, progress=False)
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_the_study_judges_agree_as_published(toolemu_root: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    common = [f"data.root={toolemu_root}", f"paths.cache_dir={tmp_path / 'cache'}"]
    assert main(["judges", *common, "--out", str(tmp_path / "out")]) == 0  # bare: gpt5m against the other judge
    printed = capsys.readouterr().out
    assert "gpt5m vs q32: 3,888 matched trajectories (unmatched: 0 only gpt5m, 0 only q32)" in printed
    doc = json.loads((tmp_path / "out" / "judges.json").read_text())
    (c,) = doc["comparisons"]
    assert (c["a"], c["b"], c["matched"], c["only_a"], c["only_b"]) == ("gpt5m", "q32", 3888, 0, 0)
    assert set(doc["judges"]) == {"gpt5m", "q32"}
    for metric, matrix in STUDY_CONFUSION.items():
        s = c["metrics"][metric]
        assert s["n"] == 3888 and s["matrix"] == matrix and s["grid"] == [0, 1, 2, 3]
        assert s["exact"] == pytest.approx(sum(matrix[i][i] for i in range(4)) / 3888)
        assert 0.85 < s["within_one"] < 0.9 and 0.5 < s["kappa"] < 0.61
        assert s["mean_a"] < s["mean_b"]  # gpt-5-mini is the stricter judge on both metrics
    assert c["metrics"]["safety"]["kappa"] == pytest.approx(0.605, abs=5e-4)
    assert c["metrics"]["helpfulness"]["kappa"] == pytest.approx(0.516, abs=5e-4)
    for name in ("judges.md", "judges.csv", "confusion_gpt5m_vs_q32_safety.png",
                 "confusion_gpt5m_vs_q32_helpfulness.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    csv_lines = (tmp_path / "out" / "judges.csv").read_text().splitlines()
    assert csv_lines[0] == "judge_a,judge_b,metric,n,exact,within_one,kappa,mean_a,mean_b" and len(csv_lines) == 3

    # the explicit form, data config against data config, says the same
    assert main(["judges", "data=toolemu_gpt5m", *common, "--against", "data=toolemu_q32", "--json"]) == 0
    (explicit,) = json.loads(capsys.readouterr().out)["comparisons"]
    assert explicit["metrics"] == c["metrics"]


def test_judges_names_the_fix_when_the_second_judge_is_ambiguous(cache_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["judges", "data=synthetic", f"paths.cache_dir={cache_dir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other judges than synthetic: none; name the second one with --against" in err and "\n" not in err


def test_a_rule_judge_on_published_data_is_one_line(toolemu_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--judge-only", f"data.root={toolemu_root}", "eval/judge=rule",
                 f"paths.cache_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agent-safety evaluate: error: eval.judge.kind=rule needs the synthetic benchmark")


# -------------------------------------------------------------------------------------------- judge only


def test_judge_only_with_the_rule_judge_reproduces_the_synthetic_labels(cache_dir: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calibration"
    assert main(["evaluate", "--judge-only", "data=synthetic", "eval/judge=rule", f"paths.cache_dir={cache_dir}",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "synthetic-rerun vs synthetic: 512 matched trajectories" in printed  # 64 test cases x 8 agents
    doc = json.loads((out / "judges.json").read_text())
    assert (doc["split"], doc["trajectories"], doc["judge"]["kind"]) == ("test", 512, "rule")
    assert doc["judge"]["scored"] == {"safety": 512, "helpfulness": 512}
    (c,) = doc["comparisons"]
    assert (c["matched"], c["only_a"], c["only_b"]) == (512, 0, 0)
    for s in c["metrics"].values():
        assert (s["exact"], s["within_one"], s["kappa"]) == (1.0, 1.0, 1.0)
        assert sum(s["matrix"][i][i] for i in range(4)) == 512
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 512 and all(r["safety"]["score"] == r["safety"]["published"] for r in labels)

    assert main(["evaluate", "--judge-only", "data=synthetic", "eval/judge=rule", f"paths.cache_dir={cache_dir}",
                 "--split", "all", "--max-trajectories", "40"]) == 0
    assert "synthetic-rerun vs synthetic: 40 matched trajectories" in capsys.readouterr().out
    assert main(["evaluate", "--judge-only", "runs/some-run", f"paths.cache_dir={cache_dir}"]) == 2
    assert "--judge-only takes no TARGET (got 'runs/some-run')" in capsys.readouterr().err


@pytest.mark.llm
@pytest.mark.slow  # 4 judge prompts of ~1,000 tokens each: minutes on the test server's CPU
def test_judge_only_through_an_llm_counts_scored_and_unscored_and_a_rerun_sends_nothing(
        llm_url: str, toolemu_root: Path, tmp_path: Path) -> None:
    from agent_safety.run.calibrate import judge_only

    endpoint = {"base_url": llm_url, "model": LLM_MODEL, "max_tokens": 32, "timeout_s": 120, "max_concurrency": 2}
    overrides = [f"data.root={toolemu_root}", f"paths.cache_dir={tmp_path / 'cache'}", "eval/judge=llm",
                 *(f"eval.judge.endpoint.{k}={v}" for k, v in endpoint.items()), "eval.judge.label=smollm2",
                 "eval.judge.max_parse_retries=0"]
    report, comparisons = judge_only(overrides, max_trajectories=2, out=tmp_path / "out", figures=False)
    judge = report["judge"]
    assert (judge["name"], judge["model"], report["trajectories"]) == ("smollm2", LLM_MODEL, 2)
    for metric in ("safety", "helpfulness"):
        assert judge["scored"][metric] + judge["unscored"][metric] == 2
        assert judge["parse_failures"][metric] == judge["unscored"][metric]  # one replicate, no retry
    assert judge["usage"]["requests_sent"] == 4 and judge["usage"]["cached"] == 0
    assert [(c.a, c.b, c.matched) for c in comparisons] == [("smollm2", "gpt5m", 2), ("smollm2", "q32", 2)]
    for c in comparisons:
        for metric, s in c.metrics.items():
            assert s.n == judge["scored"][metric] and 0 <= s.exact <= 1
    assert len((tmp_path / "out" / "labels.jsonl").read_text().splitlines()) == 2

    again, _ = judge_only(overrides, max_trajectories=2, figures=False)
    assert again["judge"]["usage"]["requests_sent"] == 0 and again["judge"]["usage"]["cached"] == 4
    assert again["judge"]["scored"] == judge["scored"]
