"""Malformed data raises an error naming the file and line, and no run is marked completed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent_safety.data.benchmark import synthetic_root
from agent_safety.data.toolemu import DataError, load_benchmark
from agent_safety.run.schedule import run_dir_for, run_schedule


@pytest.fixture
def data_copy(make_cfg, tmp_path: Path, cache_dir: Path) -> Path:
    src = synthetic_root(make_cfg().data, cache_dir)
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def first_file(root: Path, suffix: str = "") -> Path:
    files = sorted(p for p in (root / "data" / "raw_data_by_eval" / "synthetic").rglob(f"*{suffix}.jsonl")
                   if suffix or "_eval_" not in p.name)
    return files[0]


def rewrite_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[line_no - 1] = text
    path.write_text("".join(lines))


def test_truncated_json_line(data_copy: Path) -> None:
    path = first_file(data_copy)
    line = path.read_text().splitlines()[2]
    rewrite_line(path, 3, line[: len(line) // 2] + "\n")
    with pytest.raises(DataError, match=rf"{path.name}:3: unparsable JSON"):
        load_benchmark(data_copy, "synthetic")


def test_missing_score(data_copy: Path) -> None:
    path = first_file(data_copy, "_eval_agent_safe")
    rec = json.loads(path.read_text().splitlines()[4])
    del rec["eval_scores"]
    rewrite_line(path, 5, json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=rf"{path.name}:5: missing or bad eval_scores.ToolCallRisk"):
        load_benchmark(data_copy, "synthetic")


def test_score_out_of_range(data_copy: Path) -> None:
    path = first_file(data_copy, "_eval_agent_help_ignore_safety")
    rec = json.loads(path.read_text().splitlines()[0])
    rec["eval_scores"]["Helpfulness"] = 7
    rewrite_line(path, 1, json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=rf"{path.name}:1: score Helpfulness=7.0 outside 0-3"):
        load_benchmark(data_copy, "synthetic")


def test_eval_file_of_different_length(data_copy: Path) -> None:
    path = first_file(data_copy, "_eval_agent_safe")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    with pytest.raises(DataError, match=rf"{path.name}: {len(lines) - 1} records but"):
        load_benchmark(data_copy, "synthetic")


def test_missing_parallel_eval_file(data_copy: Path) -> None:
    path = first_file(data_copy, "_eval_agent_help_ignore_safety")
    path.unlink()
    with pytest.raises(DataError, match=rf"{path.name}: missing parallel eval file"):
        load_benchmark(data_copy, "synthetic")


def test_skip_mode_counts_instead(data_copy: Path) -> None:
    path = first_file(data_copy)
    rewrite_line(path, 2, "{not json\n")
    bench = load_benchmark(data_copy, "synthetic", on_error="skip")
    assert len(bench.skipped) == 1 and f"{path.name}:2" in bench.skipped[0]


def test_run_on_bad_data_fails_and_is_not_completed(make_cfg, data_copy: Path) -> None:
    path = first_file(data_copy)
    rewrite_line(path, 1, '{"case_idx": 0, "intermediate_steps": \n')
    cfg = make_cfg(f"data.root={data_copy}", "logger=none")
    with pytest.raises(DataError, match=rf"{path.name}:1"):
        run_schedule(cfg)
    _, rd, _ = run_dir_for(cfg)
    status = json.loads(rd.status_path.read_text())
    assert status["status"] == "failed" and f"{path.name}:1" in status["error"]
    assert not list(rd.root.glob("eval/*/metrics.jsonl"))


def _spoil_bytes(path: Path, line_no: int) -> int:
    """Put a byte that is not UTF-8 (0xff) into line ``line_no``; returns its column."""
    lines = path.read_bytes().splitlines(keepends=True)
    column = lines[line_no - 1].index(b'"', 10) + 1  # inside a string value
    lines[line_no - 1] = lines[line_no - 1][: column - 1] + b"\xff" + lines[line_no - 1][column - 1:]
    path.write_bytes(b"".join(lines))
    return column


def test_bytes_that_are_not_utf8_name_file_line_and_column(data_copy: Path) -> None:
    path = first_file(data_copy)
    column = _spoil_bytes(path, 3)
    with pytest.raises(DataError, match=rf"{path.name}:3: not UTF-8 \(byte 0xff at column {column}\)"):
        load_benchmark(data_copy, "synthetic")
    evals = first_file(data_copy, "_eval_agent_safe")
    _spoil_bytes(evals, 1)
    with pytest.raises(DataError, match=rf"{evals.name}:1: not UTF-8"):
        load_benchmark(data_copy, "synthetic")


def test_skip_mode_skips_bytes_that_are_not_utf8(data_copy: Path) -> None:
    clean = load_benchmark(data_copy, "synthetic")
    path = first_file(data_copy)
    _spoil_bytes(path, 2)
    bench = load_benchmark(data_copy, "synthetic", on_error="skip")
    assert len(bench.skipped) == 1 and f"{path.name}:2: not UTF-8" in bench.skipped[0]
    assert len(bench.trajectories) == len(clean.trajectories) - 1


def test_data_stats_on_bytes_that_are_not_utf8_is_one_line(make_cfg, data_copy: Path, capsys) -> None:
    from agent_safety.cli import main

    path = first_file(data_copy)
    _spoil_bytes(path, 4)
    code = main(["data", "stats", "model=tiny", f"data.root={data_copy}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{path}:4: not UTF-8 (byte 0xff" in err[0]
