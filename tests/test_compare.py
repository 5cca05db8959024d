"""``aggregate --compare`` on a synthetic pair of result sets whose relation is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_aggregate import make_runs, run_cli

#: Set B's safety = A's × SCALE + SHIFT (means and every case score): slopes and distances from the
#: frontier scale by SCALE, R² and both persistence ratios stay the same.
SCALE, SHIFT = 0.9, 0.2


def rescaled_copy(src: Path, dest: Path) -> None:
    """Copy a run root, mapping every safety score s -> SCALE·s + SHIFT (still within 0-3)."""
    for path in sorted(src.rglob("*")):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name == "metrics.jsonl":
            recs = [json.loads(line) for line in path.read_text().splitlines() if line]
            for r in recs:
                r["safety"] = SCALE * r["safety"] + SHIFT
                r["case_safety"] = [SCALE * s + SHIFT for s in r["case_safety"]]
            target.write_text("".join(json.dumps(r) + "\n" for r in recs))
        else:
            target.write_bytes(path.read_bytes())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    make_runs(root / "plain")
    rescaled_copy(root / "plain", root / "scaled")
    return root / "plain", root / "scaled"


def test_compare_writes_both_sets_side_by_side(pair: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]):
    plain, scaled = pair
    out = tmp_path / "cmp"
    assert run_cli(str(plain), str(scaled), "--compare", "--out", str(out), "--bootstrap", "300") == 0
    printed = capsys.readouterr().out
    assert "plain: R² = " in printed and "scaled: R² = " in printed

    cj = json.loads((out / "compare.json").read_text())
    assert cj["labels"] == ["plain", "scaled"]
    a, b = cj["sets"]["plain"], cj["sets"]["scaled"]
    assert a["root"] == str(plain) and b["n"] == a["n"] == 20
    assert b["slope"] == pytest.approx(SCALE * a["slope"]) and b["r2"] == pytest.approx(a["r2"])
    # The same draws for both sets (same cases and seeds): the intervals map through the same transform.
    assert b["r2_ci"] == pytest.approx(a["r2_ci"]) and b["bootstrap"]["r2_ci_seeds"] == pytest.approx(
        a["bootstrap"]["r2_ci_seeds"])
    for beta in ("0.05", "0.1", "pooled"):
        for ratio in ("S", "H"):
            pa, pb = a["persistence_ci"][beta][ratio], b["persistence_ci"][beta][ratio]
            assert pb["value"] == pytest.approx(pa["value"]) and pb["ci"] == pytest.approx(pa["ci"])
    assert [r["config"] for r in a["residuals"]] == ["S", "H", "S&H", "S→H", "H→S"]
    for ra, rb in zip(a["residuals"], b["residuals"], strict=True):
        assert rb["residual"] == pytest.approx(SCALE * ra["residual"])
        assert rb["ci"] == pytest.approx([SCALE * v for v in ra["ci"]])
        assert rb["off_frontier"] == ra["off_frontier"]

    summary = (out / "summary.md").read_text()
    assert "# Frontier comparison: plain vs scaled" in summary
    assert "|  | plain | scaled |" in summary and "| β | ratio | plain | scaled |" in summary
    assert "| configuration | plain | scaled |" in summary
    slope_row = next(line for line in summary.splitlines() if line.startswith("| slope |"))
    assert slope_row == f"| slope | {a['slope']:.3f} | {b['slope']:.3f} |"
    pooled_s = next(line for line in summary.splitlines() if line.startswith("| pooled | Persist(S) |"))
    assert pooled_s.count("[") == 2  # a value with its interval in each set's column
    assert "![compare](figures/compare.png)" in summary
    assert (out / "figures" / "compare.png").stat().st_size > 20_000
    for name in ("plain", "scaled"):  # each set's full outputs
        fj = json.loads((out / name / "frontier.json").read_text())
        assert fj["r2"] == pytest.approx(cj["sets"][name]["r2"])
        assert (out / name / "figures" / "residuals.png").is_file()


def test_compare_labels(pair: tuple[Path, Path], tmp_path: Path):
    plain, scaled = pair
    out = tmp_path / "cmp"
    assert run_cli(str(plain), str(scaled), "--compare", "--labels", "match,cross", "--out", str(out),
                   "--no-figures", "--bootstrap", "20") == 0
    assert json.loads((out / "compare.json").read_text())["labels"] == ["match", "cross"]
    assert (out / "match" / "frontier.json").is_file() and not (out / "figures").exists()
    # Two roots of the same folder name get their parents' names.
    same = tmp_path / "x" / "runs", tmp_path / "y" / "runs"
    for s, src in zip(same, pair, strict=True):
        s.parent.mkdir()
        s.symlink_to(src, target_is_directory=True)
    from agent_safety.aggregate.compare import set_labels

    assert set_labels(list(same), None) == ["x-runs", "y-runs"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--compare", "--labels", "a"], "1 label(s) for 2 result sets"),
    (["--compare", "--labels", "a,a"], "labels must differ"),
    (["--compare", "--labels", "a,b/c"], "labels must be plain names"),
    (["--labels", "a,b"], "--labels goes with --compare"),
    (["--compare", "--wandb", "me/p"], "no --wandb"),
])
def test_compare_bad_arguments_exit_with_one_line(pair: tuple[Path, Path], tmp_path: Path, argv: list[str],
                                                  message: str):
    with pytest.raises(SystemExit) as exc:
        run_cli(*map(str, pair), *argv, "--out", str(tmp_path / "o"), "--bootstrap", "0")
    assert message in str(exc.value.code) and "\n" not in str(exc.value.code)


def test_compare_needs_two_sets_and_names_the_empty_one(pair: tuple[Path, Path], tmp_path: Path):
    with pytest.raises(SystemExit, match="two or more run roots"):
        run_cli(str(pair[0]), "--compare", "--out", str(tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no completed run records found .*\[result set 'empty'\]"):
        run_cli(str(pair[0]), str(tmp_path / "empty"), "--compare", "--out", str(tmp_path / "o"), "--bootstrap",
                "0", "--no-figures")


def test_compare_without_bootstrap_has_no_intervals(pair: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "cmp"
    assert run_cli(*map(str, pair), "--compare", "--out", str(out), "--bootstrap", "0", "--no-figures") == 0
    cj = json.loads((out / "compare.json").read_text())
    assert all(r["ci"] == [None, None] for r in cj["sets"]["plain"]["residuals"])
    assert np.isfinite(cj["sets"]["plain"]["r2"]) and "no bootstrap" in (out / "summary.md").read_text()
