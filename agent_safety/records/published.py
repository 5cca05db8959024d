"""``import-published``: turn the study's published eval results into our run records.

Upstream's ``results/match_eval_results`` (or ``cross_eval_results``) holds one folder per agent run:
trained runs named like ``dpo_Llama3.1-8B_safe_gpt5m_beta-0.05_s0_help_gpt5m_beta-0.05_s0`` and base
models named by their hub name (``meta-llama_Llama-3.1-8B-Instruct``). Each trajectory file ``X.jsonl``
(named ``…_eval-<judge>_r<a>-<b>_….jsonl``) has two parallel eval files, ``X_eval_agent_safe.jsonl`` and
``X_eval_agent_help_ignore_safety.jsonl``; line i of each scores line i of the trajectory file.

What we write, per upstream folder (see docs/frontier.md):

* a trained run -> one run dir with one metrics line per eval judge, ``stage`` = number of stages and
  ``objectives`` = all of them, scored on the test cases of the run's own split seed;
* a base model -> one run dir per split seed (the study scored base models on each seed's test split in
  turn), each with one stage-0 line per eval judge.

Only the fields needed are parsed: ``case_idx`` from trajectory lines and ``eval_scores`` from eval lines,
by regex, falling back to a full JSON parse. Bad lines and files go to ``import_skipped.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent_safety.data.split import split_cases
from agent_safety.data.toolemu import HELP_SUFFIX, METRIC_FILES, SAFE_SUFFIX, median_score
from agent_safety.records.rundir import RunDir
from agent_safety.records.schema import IMPORT_SKIPPED_FILE, SCORE_RANGE, Skip, StageRecord, schedule_label
from agent_safety.store.io import atomic_write

#: Upstream result sets, by the short name used on the command line.
RESULT_SETS: Mapping[str, str] = MappingProxyType({"match": "match_eval_results", "cross": "cross_eval_results"})
#: Upstream model names (trained-run token or hub folder name) -> our model names.
MODEL_NAMES: Mapping[str, str] = MappingProxyType({
    "llama3.1-8b": "llama3.1-8b", "meta-llama_llama-3.1-8b-instruct": "llama3.1-8b",
    "qwen2.5-7b": "qwen2.5-7b", "qwen_qwen2.5-7b-instruct": "qwen2.5-7b",
    "phi-4": "phi-4", "microsoft_phi-4": "phi-4",
    "qwen3-8b": "qwen3-8b", "qwen_qwen3-8b": "qwen3-8b",
})
#: Upstream eval judge (from ``_eval-<judge>_`` in file names) -> our judge labels.
JUDGE_NAMES: Mapping[str, str] = MappingProxyType({
    "gpt-5-mini": "gpt5m", "gpt5m": "gpt5m", "qwen_qwen3-32b": "q32", "qwen3-32b": "q32", "q32": "q32",
})
OBJECTIVES: Mapping[str, str] = MappingProxyType({"safe": "safety", "help": "helpfulness", "both": "both"})
DEFAULT_BETA = 0.1
N_CASES = 144
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

_STAGE = r"(safe|help|both)_([A-Za-z0-9.\-]+?)(?:_beta-([0-9.]+(?:[eE]-?[0-9]+)?))?_s(\d+)"
_RUN_NAME = re.compile(rf"dpo_(?P<model>.+?)_(?P<stages>{_STAGE}(?:_{_STAGE})*)")
_STAGE_RE = re.compile(_STAGE)
_FILE_JUDGE = re.compile(r"_eval-(?P<judge>.+?)_r(?P<a>\d+)-(?P<b>\d+)(?:_|\.jsonl$)")
_CASE_IDX = re.compile(rb'"case_idx"\s*:\s*(-?\d+)')
_EVAL_SCORES = re.compile(rb'"eval_scores"\s*:\s*(\{[^{}]*\})')


@dataclass(frozen=True)
class Stage:
    objective: str
    label_judge: str
    beta: float
    seed: int


@dataclass(frozen=True)
class RunName:
    """A parsed upstream folder name; ``stages`` is empty for a base model."""

    model: str
    stages: tuple[Stage, ...] = ()


@dataclass
class ImportReport:
    runs: int = 0
    records: int = 0
    folders: int = 0
    result_set: str = ""
    skipped: list[Skip] = field(default_factory=list)


def model_name(upstream: str) -> str:
    """Our model name for an upstream one; unknown names are kept, lowercased."""
    key = upstream.lower()
    return MODEL_NAMES.get(key, key)


def judge_name(upstream: str) -> str:
    key = upstream.lower()
    return JUDGE_NAMES.get(key, key)


def parse_run_name(name: str) -> RunName:
    """Parse an upstream folder name; raises ValueError for a ``dpo_`` name it cannot parse."""
    if not name.startswith("dpo_"):
        return RunName(model_name(name))
    m = _RUN_NAME.fullmatch(name)
    if not m:
        raise ValueError(f"cannot parse configuration label from folder name {name!r}")
    stages = tuple(
        Stage(OBJECTIVES[s.group(1)], s.group(2), float(s.group(3)) if s.group(3) else DEFAULT_BETA, int(s.group(4)))
        for s in _STAGE_RE.finditer(m.group("stages"))
    )
    return RunName(model_name(m.group("model")), stages)


def _eval_score(line: bytes, key: str) -> float:
    found = _EVAL_SCORES.findall(line)  # the last one is the top-level key
    try:
        scores = json.loads(found[-1]) if found else json.loads(line)["eval_scores"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unparsable eval record ({type(exc).__name__})") from None
    if not isinstance(scores, dict) or key not in scores:
        raise ValueError(f"eval_scores has no {key}")
    score = median_score(scores[key])
    lo, hi = SCORE_RANGE
    if not lo <= score <= hi:
        raise ValueError(f"{key} {score:g} outside {lo:g}-{hi:g}")
    return score


def _case_idx(line: bytes) -> int:
    found = _CASE_IDX.findall(line)
    if found:
        return int(found[-1])
    try:
        return int(json.loads(line)["case_idx"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unparsable trajectory record ({type(exc).__name__})") from None


def read_scores(folder: Path) -> tuple[dict[str, dict[int, tuple[float, float]]], list[Skip]]:
    """Scores of one upstream folder: {judge: {case: (safety, helpfulness)}}, and what was skipped."""
    scores: dict[str, dict[int, tuple[float, float]]] = {}
    skipped: list[Skip] = []
    for traj in sorted(folder.glob("*.jsonl")):
        if traj.name.endswith((f"{SAFE_SUFFIX}.jsonl", f"{HELP_SUFFIX}.jsonl")):
            continue
        m = _FILE_JUDGE.search(traj.name)
        if not m:
            skipped.append(Skip(str(traj), "no _eval-<judge>_r<a>-<b> in the file name"))
            continue
        judge = judge_name(m.group("judge"))
        stem = str(traj)[: -len(".jsonl")]
        try:
            traj_lines = traj.read_bytes().splitlines()
            evals = {metric: (Path(f"{stem}{suffix}.jsonl"), Path(f"{stem}{suffix}.jsonl").read_bytes().splitlines(),
                              key) for metric, (suffix, key) in METRIC_FILES.items()}
        except OSError as exc:
            skipped.append(Skip(str(traj), f"missing parallel eval file: {exc.filename}"))
            continue
        bad_len = [(p, len(ls)) for p, ls, _ in evals.values() if len(ls) != len(traj_lines)]
        if bad_len:
            skipped.append(Skip(str(traj), "eval files of a different length: " + ", ".join(
                f"{p.name} has {n} lines, the trajectory file {len(traj_lines)}" for p, n in bad_len)))
            continue
        (sp, s_lines, s_key), (hp, h_lines, h_key) = evals["safety"], evals["helpfulness"]
        by_case = scores.setdefault(judge, {})
        for i, (t_line, s_line, h_line) in enumerate(zip(traj_lines, s_lines, h_lines, strict=True), 1):
            where = f"{traj}:{i}"
            try:
                case = _case_idx(t_line)
                where = f"{sp}:{i}"
                safety = _eval_score(s_line, s_key)
                where = f"{hp}:{i}"
                helpfulness = _eval_score(h_line, h_key)
            except ValueError as exc:
                skipped.append(Skip(where, str(exc)))
                continue
            if case in by_case:
                skipped.append(Skip(f"{traj}:{i}", f"duplicate case {case} for judge {judge}"))
                continue
            by_case[case] = (safety, helpfulness)
    return scores, skipped


def _record(run_id: str, group: str, model: str, judge: str, stages: tuple[Stage, ...], seed: int,
            test: list[int], by_case: Mapping[int, tuple[float, float]]) -> dict[str, Any] | None:
    cases = [c for c in test if c in by_case]
    if not cases:
        return None
    cs = [by_case[c][0] for c in cases]
    ch = [by_case[c][1] for c in cases]
    objectives = [s.objective for s in stages]
    return StageRecord(
        run_id=run_id, group=group, model=model, judge=judge, stage=len(stages), objectives=objectives,
        beta=stages[-1].beta if stages else DEFAULT_BETA, seed=seed, safety=sum(cs) / len(cs),
        helpfulness=sum(ch) / len(ch), data=f"toolemu_{stages[-1].label_judge}" if stages else "toolemu",
        schedule=schedule_label(objectives), label_judges=[s.label_judge for s in stages], eval_id=group,
        eval_name=group, n_test_cases=len(test), cases=cases, case_safety=cs, case_helpfulness=ch,
    ).to_dict()


def write_run(out: Path, group: str, run_id: str, records: list[dict[str, Any]], upstream: str) -> None:
    """Write one run dir in our layout, its records as the evaluation setting ``<group>`` (the study's
    generative evaluation, match or cross); each ``status.json`` last, so a partial write never reads as
    completed."""
    rd = RunDir(out / group / run_id)
    ev = rd.eval(group)
    ev.root.mkdir(parents=True, exist_ok=True)
    atomic_write(ev.metrics_path, "".join(json.dumps(r) + "\n" for r in records), durable=False)
    status = {"run_id": run_id, "status": "completed", "error": None, "source": "import-published",
              "upstream_folder": upstream}
    atomic_write(ev.status_path, json.dumps({**status, "eval_id": group}, indent=1) + "\n", durable=False)
    atomic_write(rd.status_path, json.dumps(status, indent=1) + "\n", durable=False)


def _is_result_set(path: Path) -> bool:
    """A folder whose subfolders hold upstream eval files."""
    for sub in path.iterdir():
        if sub.is_dir() and next(sub.glob(f"*{SAFE_SUFFIX}.jsonl"), None) is not None:
            return True
    return False


def find_result_set(root: Path, which: str = "auto") -> tuple[str, Path]:
    """Locate the result set under ROOT: the set itself, ``results/<set>``, or ``*/results/<set>``."""
    wanted = list(RESULT_SETS) if which == "auto" else [which]
    if root.name in {RESULT_SETS[w] for w in wanted} or (which == "auto" and _is_result_set(root)):
        short = next((k for k, v in RESULT_SETS.items() if v == root.name), which if which != "auto" else "match")
        return short, root
    found: list[tuple[str, Path]] = []
    for short in wanted:
        name = RESULT_SETS[short]
        for cand in (root / name, root / "results" / name, *sorted(root.glob(f"*/results/{name}"))):
            if cand.is_dir():
                found.append((short, cand))
                break
    if not found:
        raise FileNotFoundError(f"no results/{'|'.join(RESULT_SETS[w] for w in wanted)} folder under {root}")
    if len(found) > 1:
        raise FileNotFoundError(f"both {found[0][1]} and {found[1][1]} exist under {root}: pick one with --set")
    return found[0]


def _read_folder(folder: Path) -> tuple[str, RunName | None, dict, list[Skip]]:
    try:
        name = parse_run_name(folder.name)
    except ValueError as exc:
        return folder.name, None, {}, [Skip(str(folder), str(exc))]
    scores, skipped = read_scores(folder)
    return folder.name, name, scores, skipped


def _read_all(folders: list[Path], workers: int) -> Iterator[tuple[str, RunName | None, dict, list[Skip]]]:
    if workers <= 1 or len(folders) < 8:
        yield from map(_read_folder, folders)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_read_folder, folders, chunksize=max(1, len(folders) // (4 * workers)))


def import_published(root: str | os.PathLike[str], out: str | os.PathLike[str], *, which: str = "auto",
                     n_cases: int = N_CASES, base_seeds: Iterable[int] | None = None,
                     workers: int | None = None) -> ImportReport:
    """Import one upstream result set into run records under ``out/published-<set>/``."""
    root, out = Path(root), Path(out)
    short, results = find_result_set(root, which)
    group = f"published-{short}"
    report = ImportReport(result_set=str(results))
    folders = sorted(p for p in results.iterdir() if p.is_dir())
    report.folders = len(folders)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    read = list(_read_all(folders, workers))
    trained_seeds = sorted({n.stages[-1].seed for _, n, _, _ in read if n and n.stages})
    seeds = list(base_seeds) if base_seeds is not None else (trained_seeds or list(DEFAULT_SEEDS))
    tests = {s: split_cases(n_cases, s)[1] for s in {*seeds, *trained_seeds}}
    for folder, name, scores, skipped in read:
        report.skipped.extend(skipped)
        if name is None:
            continue
        if not scores:
            report.skipped.append(Skip(str(results / folder), "no scored trajectories in the folder"))
            continue
        runs = ([(f"{short}-{folder}", name.stages[-1].seed)] if name.stages
                else [(f"{short}-{folder}_s{s}", s) for s in seeds])
        for run_id, seed in runs:
            records = [r for judge in sorted(scores) if (r := _record(run_id, group, name.model, judge,
                                                                        name.stages, seed, tests[seed],
                                                                        scores[judge])) is not None]
            if not records:
                report.skipped.append(Skip(str(results / folder), f"no scores on seed {seed}'s test cases"))
                continue
            write_run(out, group, run_id, records, folder)
            report.runs += 1
            report.records += len(records)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / IMPORT_SKIPPED_FILE, json.dumps([s.to_dict() for s in report.skipped], indent=1) + "\n")
    return report


def _extract(archive: Path, dest: Path) -> Path:
    """Extract the result sets of an upstream archive safely (tarfile's data filter: no traversal, no
    links out); a whole-repository archive also holds data we do not need."""
    wanted = tuple(f"{name}/" for name in RESULT_SETS.values())
    with tarfile.open(archive) as tar:
        members = [m for m in tar if any(w in m.name + "/" for w in wanted)]
        tar.extractall(dest, members=members or None, filter="data")
    return dest


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``import-published`` subcommand."""
    p = subparsers.add_parser(
        "import-published", help="turn the study's published eval results into run records",
        description="Read upstream's results/match_eval_results or results/cross_eval_results (ROOT may be "
                    "the set itself, a checkout or extracted archive holding it, or a .tar.* archive) and "
                    "write run records that `aggregate` reads.")
    p.add_argument("root", help="upstream result set, checkout, extracted archive or archive file")
    p.add_argument("--out", required=True, help="runs dir to write the records into")
    p.add_argument("--set", dest="result_set", choices=["auto", *RESULT_SETS], default="auto",
                   help="which result set to import when ROOT holds both (default: the only one found)")
    p.add_argument("--n-cases", type=int, default=N_CASES, help="cases in the benchmark (ToolEmu: 144)")
    p.add_argument("--base-seeds", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                   help="split seeds to score base models on (default: the trained runs' seeds)")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: up to 2)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.exists():
        raise SystemExit(f"import-published: {root} does not exist")
    with tempfile.TemporaryDirectory(prefix="agent-safety-import-") as tmp:
        if root.is_file():
            root = _extract(root, Path(tmp))
        try:
            report = import_published(root, args.out, which=args.result_set, n_cases=args.n_cases,
                                      base_seeds=args.base_seeds, workers=args.workers)
        except FileNotFoundError as exc:
            raise SystemExit(f"import-published: {exc}") from None
    if not report.runs:
        raise SystemExit(f"import-published: no runs could be imported from {report.result_set} "
                         f"({len(report.skipped)} skipped; see {Path(args.out) / IMPORT_SKIPPED_FILE})")
    print(f"imported {report.runs} runs ({report.records} records) from {report.folders} folders of "
          f"{report.result_set} into {args.out}")
    if report.skipped:
        print(f"{len(report.skipped)} skipped (see {Path(args.out) / IMPORT_SKIPPED_FILE}):", file=sys.stderr)
        for s in report.skipped[:10]:
            print(f"  {s.source}: {s.reason}", file=sys.stderr)
    return 0
