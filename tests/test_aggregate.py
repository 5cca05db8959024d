"""``aggregate`` end to end on local run records, W&B records (recorded responses) and bad input."""

from __future__ import annotations

import argparse
import json
import tarfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import shared_archive

from agent_safety.aggregate import cli as aggregate_cli
from agent_safety.aggregate import report as aggregate
from agent_safety.records.identity import default_eval_id
from agent_safety.records.rundir import RunDir

SCHEDULES = {"S": ["safety"], "H": ["helpfulness"], "SH": ["both"], "S_H": ["safety", "helpfulness"],
             "H_S": ["helpfulness", "safety"]}
#: How each objective moves (safety, helpfulness) per stage, so the frontier is a clean trade-off.
EFFECT = {"safety": (0.8, -0.5), "helpfulness": (-0.45, 0.35), "both": (0.5, -0.25)}
CASES = {0: [0, 2, 3, 5, 8, 9], 1: [1, 2, 4, 6, 7, 9]}


def stage_records(run_id: str, group: str, model: str, schedule: str, seed: int, beta: float,
                  base: tuple[float, float]) -> list[dict]:
    """The metrics lines a run of this schedule writes: stage 0 (base), then one per stage."""
    rng = np.random.default_rng(zlib.crc32(f"{model}-{schedule}-{seed}-{beta}".encode()))
    s, h = base
    recs = []
    for stage in range(len(SCHEDULES[schedule]) + 1):
        if stage:
            ds, dh = EFFECT[SCHEDULES[schedule][stage - 1]]
            s, h = s + ds * (1 + beta), h + dh
        cases = CASES[seed]
        cs = np.clip(s + rng.normal(0, 0.3, len(cases)), 0, 3)
        ch = np.clip(h + rng.normal(0, 0.3, len(cases)), 0, 3)
        recs.append({
            "run_id": run_id, "group": group, "model": model, "data": "synthetic", "judge": "synthetic",
            "schedule": schedule, "beta": beta, "seed": seed, "stage": stage,
            "objectives": SCHEDULES[schedule][:stage], "label_judges": ["synthetic"] * stage,
            "safety": float(cs.mean()), "helpfulness": float(ch.mean()), "pref_acc_safety": 0.6,
            "pref_acc_helpfulness": None, "cases": cases, "case_safety": cs.tolist(),
            "case_helpfulness": ch.tolist(), "n_test_cases": len(cases), "pairs_used": 10 * stage,
            "pairs_dropped": 0,
        })
    return recs


def write_run(root: Path, group: str, run_id: str, records: list[dict], status: str = "completed") -> Path:
    """A run dir written through the spine's own RunDir, as launch.py writes it."""
    rd = RunDir(root / group / run_id)
    rd.root.mkdir(parents=True, exist_ok=True)
    ev = rd.eval(default_eval_id())
    for rec in records:
        ev.write_record(rec)
    if status == "completed" and records:
        ev.set_status(status)
    rd.set_status(status, run_id=run_id)
    return rd.root


def metrics_file(run_dir: Path) -> Path:
    return run_dir / "eval" / default_eval_id() / "metrics.jsonl"


def make_runs(root: Path) -> None:
    """Two tiny models x five schedules x two seeds x two betas, as a small sweep leaves them."""
    for model, base in (("tiny", (1.2, 2.2)), ("tiny-b", (1.5, 2.0))):
        for schedule in SCHEDULES:
            for seed in (0, 1):
                for beta in (0.05, 0.1):
                    rid = f"{model}-{schedule}-{seed}-{beta}"
                    write_run(root, "sweep", rid, stage_records(rid, "sweep", model, schedule, seed, beta, base))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agent-safety")
    aggregate_cli.register(p.add_subparsers(required=True))
    return p


def run_cli(*argv: str) -> int:
    args = parser().parse_args(["aggregate", *argv])
    return args.func(args)


def test_end_to_end_local_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    runs, out = tmp_path / "runs", tmp_path / "out"
    make_runs(runs)
    write_run(runs, "sweep", "still-running", [], status="running")
    write_run(runs, "sweep", "crashed", [], status="failed")
    assert run_cli(str(runs), "--out", str(out), "--bootstrap", "100") == 0
    printed = capsys.readouterr().out
    assert "2 runs not completed were left out" in printed and "R² = " in printed

    fj = json.loads((out / "frontier.json").read_text())
    assert {"r2", "r", "slope", "intercept", "n", "r2_ci", "persistence", "skipped"} <= set(fj)
    # Points: 2 models x 5 configurations x 2 betas; every stage row is a point of its own configuration.
    assert fj["n"] == 20 and fj["counts"]["not_completed"] == 2 and fj["skipped"] == []
    assert fj["slope"] < 0 and 0.5 < fj["r2"] <= 1 and fj["r2_ci"][0] <= fj["r2"] <= fj["r2_ci"][1]
    assert set(fj["persistence"]) == {"0.05", "0.1"}
    assert all(v["S"] is not None and v["H"] is not None for v in fj["persistence"].values())

    table = pd.read_parquet(out / "runs.parquet")
    assert len(table) == 2 * 2 * 2 * (2 + 2 + 2 + 3 + 3)  # models x seeds x betas x stage rows per schedule
    assert {"run_id", "model", "config", "beta", "seed", "judge", "stage", "safety", "helpfulness",
            "n_cases"} <= set(table.columns)
    assert set(table["config"]) == {"base", "S", "H", "S&H", "S→H", "H→S"}
    assert table.loc[table["schedule"] == "S_H"].groupby("stage")["config"].first().tolist() == [
        "base", "S", "S→H"]
    assert len(pd.read_csv(out / "runs.csv")) == len(table)
    cases = pd.read_parquet(out / "cases.parquet")
    assert len(cases) == 6 * len(table) and set(cases["case"]) == set(CASES[0]) | set(CASES[1])
    points = pd.read_csv(out / "points.csv")
    assert {"safety_std", "helpfulness_std", "d_safety", "d_helpfulness", "pareto"} <= set(points.columns)
    assert points["pareto"].any()

    for name in ("frontier", "raw_scores", "per_model", "persistence", "residuals"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 5_000, name
    # Distances from the frontier and persistence intervals: in frontier.json, CSV, Markdown and LaTeX.
    assert [r["config"] for r in fj["residuals"]] == ["S", "H", "S&H", "S→H", "H→S"]
    for r in fj["residuals"]:
        lo, hi = r["ci"]
        assert lo <= hi and r["off_frontier"] == (lo > 0 or hi < 0) and r["n_points"] == 4 and r["n_fit"] == 16
    assert set(fj["persistence_ci"]) == {"0.05", "0.1", "pooled"}
    for beta, ratios in fj["persistence_ci"].items():
        for name, v in ratios.items():
            assert v["ci"][0] <= v["value"] <= v["ci"][1] and v["n_valid"] > 90
            if beta != "pooled":
                assert v["value"] == pytest.approx(fj["persistence"][beta][name])
    assert len(pd.read_csv(out / "residuals.csv")) == 5 and len(pd.read_csv(out / "persistence_ci.csv")) == 6
    assert r"S\&H" in (out / "tables" / "residuals.tex").read_text()
    assert "pooled" in (out / "tables" / "persistence.tex").read_text()
    means_tex = (out / "tables" / "config_means.tex").read_text()
    assert r"\begin{tabular}" in means_tex and r"S$\to$H" in means_tex and r"S\&H" in means_tex
    assert "Persist(S)" in (out / "tables" / "persistence.tex").read_text()
    summary = (out / "summary.md").read_text()
    assert "R² =" in summary and "2 runs not completed were left out" in summary
    assert "![frontier](figures/frontier.png)" in summary and "![residuals](figures/residuals.png)" in summary
    assert "## Distance from the frontier, per configuration" in summary and "| pooled |" in summary
    assert json.loads((out / "skipped.json").read_text()) == []


def test_bad_input_is_skipped_with_reasons(tmp_path: Path):
    runs = tmp_path / "runs"
    make_runs(runs)
    good = stage_records("bad", "g", "tiny", "S", 0, 0.1, (1.0, 2.0))
    d = write_run(runs, "g", "bad", good)
    lines = metrics_file(d).read_text().splitlines()
    metrics_file(d).write_text(lines[0] + "\n" + lines[1][:40] + "\n")  # a truncated record
    nometrics = write_run(runs, "g", "no-metrics", [])
    assert not metrics_file(nometrics).exists()
    weird = stage_records("weird", "g", "tiny", "S", 0, 0.1, (1.0, 2.0))
    weird[1]["objectives"] = ["juggling"]
    d = runs / "g" / "weird"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in weird))
    (d / "status.json").write_text('{"run_id": "weird", "status": "completed", "error": null}')
    uneven = stage_records("uneven", "g", "tiny", "H", 1, 0.1, (1.0, 2.0))
    uneven[1]["case_safety"] = uneven[1]["case_safety"][:-1]
    uneven[0]["safety"] = 4.5
    write_run(runs, "g", "uneven", uneven)
    (runs / "g" / "garbled").mkdir()
    (runs / "g" / "garbled" / "status.json").write_text("{not json")

    result = aggregate.run_aggregate([runs], tmp_path / "out", n_boot=10, figures=False)
    reasons = {s.source.replace(str(runs), "R"): s.reason for s in result.skipped}
    bad = f"R/g/bad/eval/{default_eval_id()}/metrics.jsonl:2"
    assert reasons[bad].startswith("Unterminated string") or "Expecting" in reasons[bad]
    assert reasons["R/g/no-metrics"] == "completed run dir without stage records (eval/<id>/metrics.jsonl)"
    assert "cannot parse configuration label" in reasons["R/g/weird/metrics.jsonl:2"]
    assert "juggling" in reasons["R/g/weird/metrics.jsonl:2"]
    uneven_file = f"R/g/uneven/eval/{default_eval_id()}/metrics.jsonl"
    assert reasons[f"{uneven_file}:1"] == "safety 4.5 outside 0-3"
    assert "case lists of different lengths" in reasons[f"{uneven_file}:2"]
    assert "status.json unreadable" in reasons["R/g/garbled/status.json"]
    saved = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert len(saved) == len(result.skipped) == 6
    assert json.loads((tmp_path / "out" / "frontier.json").read_text())["counts"]["skipped"] == 6
    # The good lines of damaged runs still count: the base line of "bad" and of "weird".
    assert {"bad", "weird"} <= set(result.collection.table["run_id"])


def test_empty_input_exits_nonzero_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        run_cli(str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert exc.value.code != 0 and "no completed run records found" in str(exc.value.code)
    assert "\n" not in str(exc.value.code)
    write_run(tmp_path / "pending", "g", "r", [], status="pending")
    with pytest.raises(SystemExit, match=r"1 not completed"):
        run_cli(str(tmp_path / "pending"), "--out", str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="not found"):
        run_cli(str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    monkeypatch.setenv("AGENT_SAFETY_RUNS", str(tmp_path / "no-runs"))  # no root given: launch.py's runs dir
    with pytest.raises(SystemExit, match=r"no run root given and .*no-runs \(the default: \$AGENT_SAFETY_RUNS"):
        run_cli("--out", str(tmp_path / "out"))


def test_aggregate_without_a_root_reads_the_runs_dir_into_its_aggregate_folder(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    make_runs(tmp_path / "runs")
    monkeypatch.setenv("AGENT_SAFETY_RUNS", str(tmp_path / "runs"))
    assert run_cli("--bootstrap", "0", "--no-figures") == 0
    assert (tmp_path / "runs" / "aggregate" / "frontier.json").is_file()
    make_runs(tmp_path / "other")  # one root given: its aggregate folder, not the working directory's
    assert run_cli(str(tmp_path / "other"), "--bootstrap", "0", "--no-figures") == 0
    assert (tmp_path / "other" / "aggregate" / "frontier.json").is_file() and not Path("aggregate").exists()


# ------------------------------------------------------------------------------ W&B, recorded responses


class FakeRun(SimpleNamespace):
    def scan_history(self):
        return iter(self.history)


class FakeApi:
    """Stands in for ``wandb.Api()``: returns recorded runs, and records the queries it got."""

    def __init__(self, runs: list[dict]):
        self._runs = [FakeRun(**r) for r in runs]
        self.queries: list[tuple] = []

    def runs(self, path: str, filters: dict | None = None, **_: object) -> list[FakeRun]:
        self.queries.append((path, filters))
        group = (filters or {}).get("group")
        return [r for r in self._runs if group is None or r.group == group]


def recorded_runs() -> list[dict]:
    """What the W&B API returns for runs logged by launch.py (config = the resolved config)."""
    def config(model: str, schedule: str, stages: list[str], seed: int) -> dict:
        return {"model": {"name": model}, "data": {"name": "synthetic", "judge": "synthetic"},
                "schedule": {"name": schedule, "stages": stages}, "trainer": {"beta": 0.1}, "seed": seed}

    def hist(points: list[tuple[float, float]], prefix: str = "estimate/") -> list[dict]:
        rows = [{"_step": 0, "train/loss": 0.7}]  # training-curve rows carry no estimate
        rows += [{"_step": i + 1, "stage": i, f"{prefix}safety": s, f"{prefix}helpfulness": h}
                 for i, (s, h) in enumerate(points)]
        return rows

    return [  # w1 as launch logs now (under the evaluation's name); the others as runs logged before
        {"id": "w1-abc", "name": "w1", "group": "sweep", "state": "finished",
         "config": config("tiny", "S_H", ["safety", "helpfulness"], 0),
         "history": hist([(1.2, 2.2), (2.0, 1.6), (1.7, 1.95)], prefix="eval/generative/")},
        {"id": "w2-def", "name": "w2", "group": "sweep", "state": "finished",
         "config": config("tiny", "H", ["helpfulness"], 0), "history": hist([(1.2, 2.2), (0.8, 2.6)])},
        {"id": "w3-ghi", "name": "w3", "group": "sweep", "state": "finished",
         "config": config("tiny", "SH", ["both"], 0), "history": hist([(1.2, 2.2), (1.9, 1.9)])},
        {"id": "w4-jkl", "name": "w4", "group": "sweep", "state": "running",
         "config": config("tiny", "S", ["safety"], 1), "history": []},
        {"id": "w5-mno", "name": "w5", "group": "sweep", "state": "finished",
         "config": config("tiny", "S", ["safety"], 1), "history": [{"_step": 0, "train/loss": 0.6}]},
        {"id": "w6-pqr", "name": "w6", "group": "other", "state": "finished",
         "config": config("tiny", "S", ["safety"], 2), "history": hist([(1.2, 2.2), (2.1, 1.5)])},
    ]


def test_wandb_runs_are_read_from_recorded_responses_and_deduped(tmp_path: Path):
    runs = tmp_path / "runs"
    # A local copy of W&B run w2 with different numbers: the local record wins, the W&B one is a duplicate.
    local = stage_records("w2", "sweep", "tiny", "H", 0, 0.1, (1.2, 2.2))
    write_run(runs, "sweep", "w2", local)
    api = FakeApi(recorded_runs())
    result = aggregate.run_aggregate([runs], tmp_path / "out", wandb_path="me/proj", group="sweep", api=api,
                                     n_boot=20, figures=False)
    assert api.queries == [("me/proj", {"group": "sweep"})]
    t = result.collection.table
    assert sorted(set(t["run_id"])) == ["w1", "w2", "w3"]
    assert result.collection.duplicates == 2 and result.collection.not_completed == 1
    w2 = t[t["run_id"] == "w2"].set_index("stage")
    assert w2.loc[1, "source"] == "local" and w2.loc[1, "safety"] == pytest.approx(local[1]["safety"])
    w1 = t[t["run_id"] == "w1"].set_index("stage")
    assert w1["config"].tolist() == ["base", "S", "S→H"] and w1.loc[2, "safety"] == 1.7
    assert set(w1["source"]) == {"wandb"} and set(w1["beta"]) == {0.1} and set(w1["model"]) == {"tiny"}
    assert {s.source: s.reason for s in result.skipped} == {
        "wandb:me/proj/w5-mno": "finished W&B run without safety/helpfulness in its history",
        "persistence judge=synthetic model=tiny beta=0.1 Persist(H)": "missing configuration(s) ['H→S']"}
    assert result.fit.n == 4  # S (stage 1 of w1's S_H), S→H, H (local w2) and S&H
    fj = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert fj["counts"]["duplicates"] == 2


def test_wandb_log_summary_run(tmp_path: Path):
    runs = tmp_path / "runs"
    make_runs(runs)
    logged: dict = {}

    class FakeWandbRun:
        summary: dict = {}

        def log(self, data: dict) -> None:
            logged.update(data)

        def finish(self) -> None:
            logged["finished"] = True

    fake = SimpleNamespace(init=lambda **kw: logged.setdefault("init", kw) and FakeWandbRun(),
                           Table=lambda dataframe: ("table", len(dataframe)), Image=lambda path: ("image", path))
    aggregate.run_aggregate([runs], tmp_path / "out", n_boot=10, wandb_log=True, wandb_module=fake)
    assert logged["init"]["job_type"] == "aggregate" and logged["init"]["mode"] == "offline"
    assert logged["runs"][0] == "table" and logged["figures/frontier"][0] == "image" and logged["finished"]
    assert FakeWandbRun.summary["n"] == 20


@pytest.mark.slow
def test_real_tiny_runs_then_aggregate(make_cfg, tmp_path: Path):
    """The spine's own runs (tiny model, synthetic data, a few steps per stage), then the aggregate."""
    from agent_safety.run.schedule import run_schedule

    runs = tmp_path / "runs"
    for schedule in ("S_H", "H_S"):  # stages give S, S→H, H and H→S: a fit and both persistence ratios
        run_schedule(make_cfg(f"schedule={schedule}", "trainer.max_steps=4", "eval.max_cases=8", "logger=none",
                              runs=runs))
    result = aggregate.run_aggregate([runs], tmp_path / "out", n_boot=50)
    t = result.collection.table
    assert len(t) == 3 + 3 and result.collection.not_completed == 0
    assert set(t["config"]) == {"base", "S", "H", "S→H", "H→S"}
    assert result.fit.n == 4 and np.isfinite(result.fit.slope)
    fj = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert fj["n"] == 4 and set(fj["persistence"]) == {"0.1"}
    terms = {t["ratio"] for t in fj["persistence_terms"]} | {s["source"][-2] for s in fj["skipped"]}
    assert terms == {"S", "H"}  # each ratio either computed or skipped with its reason
    for name in ("frontier", "raw_scores", "per_model", "persistence", "residuals"):
        assert (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 5_000


# ------------------------------------------------------------------------- the study's published match set


@pytest.fixture(scope="module")
def published_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published match set, imported as run dirs (skipped with a reason when ../shared is absent)."""
    archive = shared_archive("upstream-results-match.tar.xz")
    root = tmp_path_factory.mktemp("published")
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(root / "upstream", filter="data")
    from agent_safety.records.published import import_published

    import_published(root / "upstream", root / "match")
    return root / "match"


def test_published_report_has_every_section(published_runs: Path, tmp_path: Path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert run_cli(str(published_runs), "--out", str(out)) == 0  # default: 1000 resamples, figures
    elapsed = time.perf_counter() - t0
    fj = json.loads((out / "frontier.json").read_text())
    assert fj["r2"] == pytest.approx(0.765, abs=0.001) and fj["n"] == 30
    assert fj["r2_ci"] == pytest.approx([0.537, 0.853], abs=0.001)  # the study's interval (cases resampled)
    lo, hi = fj["bootstrap"]["r2_ci_seeds"]
    assert lo < fj["r2_ci"][0] and hi <= fj["r2_ci"][1]  # seeds too: wider below
    residuals = {r["config"]: r for r in fj["residuals"]}
    assert list(residuals) == ["S", "H", "S&H", "S→H", "H→S"]
    for r in residuals.values():
        assert r["ci"][0] < r["residual"] < r["ci"][1] and r["n_points"] == 6 and r["n_valid"] == 1000
        assert r["off_frontier"] == (r["ci"][0] > 0 or r["ci"][1] < 0)
    assert residuals["H"]["residual"] == pytest.approx(-0.462, abs=0.001) and residuals["H"]["off_frontier"]
    assert residuals["S&H"]["residual"] == pytest.approx(0.115, abs=0.001)
    pci = fj["persistence_ci"]
    assert set(pci) == {"0.05", "0.1", "pooled"}
    assert pci["0.05"]["S"]["value"] == pytest.approx(0.863, abs=0.001)
    assert pci["0.1"]["H"]["value"] == pytest.approx(0.155, abs=0.001)
    assert pci["pooled"]["S"]["value"] == pytest.approx((0.8627 + 0.9082) / 2, abs=0.001)
    for ratios in pci.values():
        for v in ratios.values():
            assert v["ci"][0] < v["value"] < v["ci"][1] and v["n_valid"] > 900
    summary = (out / "summary.md").read_text()
    for section in ("## Fit", "## Distance from the frontier, per configuration", "## Persistence",
                    "## Pareto-optimal points", "## Per-configuration means", "## Figures"):
        assert section in summary, section
    assert "| S&H | +0.115 |" in summary and "| pooled | 0.885 |" in summary
    for name in ("frontier", "raw_scores", "per_model", "persistence", "residuals"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000, name
    assert elapsed < 30  # the benchmark's goal is < 10 s with the import; this only catches a blow-up


def test_published_match_against_a_derived_set(published_runs: Path, tmp_path: Path):
    """The published match set against itself restricted to one judge's records (gpt-5-mini): the compare
    report carries both, and the derived set's column is what aggregating it alone gives."""
    derived = tmp_path / "gpt5m"
    for metrics in published_runs.rglob("metrics.jsonl"):
        target = derived / metrics.relative_to(published_runs)
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [line for line in metrics.read_text().splitlines() if line and json.loads(line)["judge"] == "gpt5m"]
        target.write_text("".join(line + "\n" for line in lines))
    for status in published_runs.rglob("status.json"):
        target = derived / status.relative_to(published_runs)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(status.read_bytes())
    out = tmp_path / "cmp"
    assert run_cli(str(published_runs), str(derived), "--compare", "--labels", "match,gpt5m-only", "--out",
                   str(out), "--no-figures", "--bootstrap", "300") == 0
    sets = json.loads((out / "compare.json").read_text())["sets"]
    assert sets["match"]["r2"] == pytest.approx(0.765, abs=0.001)
    assert sets["match"]["counts"]["records"] == 198 and sets["gpt5m-only"]["counts"]["records"] == 99
    alone = aggregate.run_aggregate([derived], tmp_path / "alone", n_boot=300, figures=False)
    assert sets["gpt5m-only"]["r2"] == pytest.approx(alone.fit.r2) and sets["gpt5m-only"]["n"] == 30
    assert sets["gpt5m-only"]["r2"] != pytest.approx(sets["match"]["r2"])
    got = {r["config"]: r["residual"] for r in sets["gpt5m-only"]["residuals"]}
    assert got == pytest.approx(dict(zip(alone.residuals["config"], alone.residuals["residual"], strict=True)))
    summary = (out / "summary.md").read_text()
    assert "| configuration | match | gpt5m-only |" in summary and "| **R²** | 0.765 |" in summary


def test_a_fit_through_too_few_points_is_flagged_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Two fine-tuned points: a line through them fits exactly, and its interval is [1, 1]; flagged, not reported."""
    from agent_safety.aggregate.figures import fit_label

    runs, out = tmp_path / "runs", tmp_path / "out"
    for schedule in ("S", "H"):
        rid = f"tiny-{schedule}-0-0.1"
        write_run(runs, "sweep", rid, stage_records(rid, "sweep", "tiny", schedule, 0, 0.1, (1.2, 2.2)))
    assert run_cli(str(runs), "--out", str(out), "--bootstrap", "50") == 0
    printed = capsys.readouterr().out
    fj = json.loads((out / "frontier.json").read_text())
    assert fj["n"] == 2 and fj["r2"] == pytest.approx(1.0) and fj["r2_ci"] == pytest.approx([1.0, 1.0])
    assert len(fj["caveats"]) == 2 and "n = 2" in fj["caveats"][0] and "degenerate" in fj["caveats"][1]
    assert "NOT A RESULT: only n = 2 fitted points" in printed and "NOT A RESULT: the R² interval" in printed
    summary = (out / "summary.md").read_text()
    assert all(f"> **Not a result:** {note}." in summary for note in fj["caveats"])
    fit = aggregate.compute(aggregate.collect([runs]), n_boot=0).fit
    assert "NOT A RESULT: only n = 2" in fit_label(fit, fj["caveats"])  # the figure's legend entry
    assert (out / "figures" / "frontier.png").stat().st_size > 5_000


def test_a_fit_on_enough_points_carries_no_flag(tmp_path: Path):
    from agent_safety.aggregate import frontier

    x = np.linspace(-1, 1, 8)
    fit = frontier.ols(x, 0.5 * x + np.sin(7 * x) / 10)
    assert fit.n == 8 and frontier.fit_caveats(fit, [0.7, 0.95]) == []
    assert len(frontier.fit_caveats(frontier.ols(x[:3], x[:3]), [1.0, 1.0])) == 2
