"""Collect run records (local run dirs and W&B runs) into one tidy table.

A run dir is any folder holding ``status.json``; its ``metrics.jsonl`` has one line per stage and eval judge.
Only completed runs are used; the others are counted. Every record that cannot be used goes into a
"skipped" list with its reason, so nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agent_safety.records.identity import default_eval_id, eval_id
from agent_safety.records.schema import IMPORT_SKIPPED_FILE, Skip, StageRecord

#: Columns of the tidy table, in order.
COLUMNS: tuple[str, ...] = (
    "run_id", "group", "source", "model", "data", "judge", "schedule", "config", "objectives",
    "label_judges", "stage", "beta", "seed", "safety", "helpfulness", "pref_acc_safety",
    "pref_acc_helpfulness", "n_cases", "n_test_cases", "pairs_used", "pairs_dropped", "case_set", "eval_id",
    "eval_name",
)
#: Stands for the eval id of a run dir written before evaluation settings had folders.
LEGACY_EVAL = ""
#: Below this many run dirs, a second process costs more than it saves.
PARALLEL_MIN_DIRS = 2000


@dataclass
class Collection:
    """What ``collect`` found: the tidy table, its per-case scores and what was left out."""

    table: pd.DataFrame
    cases: pd.DataFrame
    skipped: list[Skip] = field(default_factory=list)
    not_completed: int = 0
    duplicates: int = 0
    n_run_dirs: int = 0


def find_run_dirs(roots: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield every folder holding ``status.json`` under the roots, at any depth, in sorted order.

    The walk does not descend into a run dir: its checkpoints can be large and hold no records.
    """
    stack = [os.fspath(r) for r in reversed(list(roots))]
    while stack:
        top = stack.pop()
        if os.path.isfile(os.path.join(top, "status.json")):  # one stat, cheaper than listing a run dir
            yield Path(top)
            continue
        try:
            with os.scandir(top) as it:
                subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        stack.extend(sorted(subdirs, reverse=True))


def _case_set_id(cases: Sequence[int]) -> int:
    """A positive id of a list of case indices (0 for none). Tuples of ints hash the same in every
    process (only str and bytes hashes are salted), so the id is reproducible."""
    return (hash(tuple(cases)) & 0x7FFF_FFFF_FFFF_FFFF) or 1 if len(cases) else 0


def parse_record(rec: Mapping[str, Any], *, group: str = "", source: str = "local") -> tuple[dict, tuple]:
    """Validate one stage record (see ``records.schema.StageRecord``) and turn it into a tidy row plus its
    per-case scores ``(cases, case_safety, case_helpfulness)``. Raises ValueError naming the problem; the
    caller records it in the skipped list."""
    r = StageRecord.parse(rec)
    row = {
        "run_id": r.run_id, "group": r.group or group, "source": source, "model": r.model, "data": r.data,
        "judge": r.judge, "schedule": r.schedule, "config": r.config, "objectives": ",".join(r.objectives),
        "label_judges": ",".join(r.label_judges), "stage": r.stage, "beta": r.beta, "seed": r.seed,
        "safety": r.safety, "helpfulness": r.helpfulness, "pref_acc_safety": r.pref_acc_safety,
        "pref_acc_helpfulness": r.pref_acc_helpfulness, "n_cases": len(r.cases) if r.cases else (r.n_test_cases or 0),
        "n_test_cases": r.n_test_cases, "pairs_used": r.pairs_used, "pairs_dropped": r.pairs_dropped,
        # Identifies the set of test cases scored; rows sharing it can be pooled case by case.
        "case_set": _case_set_id(r.cases), "eval_id": r.eval_id, "eval_name": r.eval_name,
    }
    return row, (r.cases, r.case_safety, r.case_helpfulness)


def _completed_evals(run_dir: Path) -> list[tuple[Path, str]]:
    """(metrics file, eval id) of each completed evaluation setting of a run dir; a run dir written before
    settings had folders holds one, ``metrics.jsonl`` at its top, whose id is read off its config."""
    legacy = run_dir / "metrics.jsonl"
    if legacy.is_file():
        return [(legacy, LEGACY_EVAL)]
    out = []
    try:
        with os.scandir(run_dir / "eval") as it:
            dirs = sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
    for d in dirs:
        try:
            done = json.loads(Path(d, "status.json").read_bytes()).get("status") == "completed"
        except (OSError, ValueError, AttributeError):
            done = False
        if done:
            out.append((Path(d, "metrics.jsonl"), os.path.basename(d)))
    return out


def _legacy_eval_id(run_dir: Path) -> str:
    """The eval id of a version-1 run dir's records, from its config snapshot."""
    from agent_safety.records.rundir import RunDir

    try:
        config = RunDir(run_dir).config()
    except Exception:  # noqa: BLE001 - an unreadable snapshot: version 1 ran the default estimate
        config = {}
    return eval_id(config) if isinstance(config, dict) and config.get("eval") else default_eval_id()


def read_run_dir(run_dir: Path) -> tuple[str, list[tuple[dict, tuple]], list[Skip]]:
    """Read one run dir: its status and, when completed, the parsed records of every completed evaluation."""
    skipped: list[Skip] = []
    status_path = run_dir / "status.json"
    try:
        status = json.loads(status_path.read_bytes())
        state = status["status"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "unreadable", [], [Skip(str(status_path), f"status.json unreadable: {exc!s:.200}")]
    if state != "completed":
        return str(state), [], []
    evals = _completed_evals(run_dir)
    if not evals:
        return state, [], [Skip(str(run_dir), "completed run dir without stage records (eval/<id>/metrics.jsonl)")]
    group = run_dir.parent.name
    source = str(status.get("source") or "local") if isinstance(status, dict) else "local"
    parsed: list[tuple[dict, tuple]] = []
    for metrics, eid in evals:
        if eid == LEGACY_EVAL:
            eid = _legacy_eval_id(run_dir)
        try:
            lines = metrics.read_bytes().splitlines()
        except OSError:
            skipped.append(Skip(str(metrics), "completed evaluation without metrics.jsonl"))
            continue
        before = len(parsed) + len(skipped)
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row, cases = parse_record(json.loads(line), group=group, source=source)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                skipped.append(Skip(f"{metrics}:{i}", f"{exc!s:.300}"))
                continue
            row["eval_id"] = row["eval_id"] or eid
            row["eval_name"] = row["eval_name"] or "estimate"
            parsed.append((row, cases))
        if len(parsed) + len(skipped) == before:
            skipped.append(Skip(str(metrics), "metrics.jsonl holds no records"))
    return state, parsed, skipped


def _import_skips(roots: Iterable[str | os.PathLike[str]]) -> list[Skip]:
    """Surface what ``import-published`` left out, so the aggregate's report is complete."""
    out: list[Skip] = []
    for root in roots:
        path = Path(root) / IMPORT_SKIPPED_FILE
        if path.is_file():
            try:
                out.extend(Skip(f"import: {d['source']}", d["reason"]) for d in json.loads(path.read_bytes()))
            except (ValueError, KeyError, TypeError) as exc:
                out.append(Skip(str(path), f"unreadable: {exc}"))
    return out


@dataclass
class _Part:
    """Records of a batch of run dirs, columnar so it crosses process boundaries cheaply."""

    table: pd.DataFrame
    lengths: np.ndarray
    cases: np.ndarray
    safety: np.ndarray
    helpfulness: np.ndarray
    skipped: list[Skip] = field(default_factory=list)
    not_completed: int = 0
    n_dirs: int = 0


def _to_part(parsed: list[tuple[dict, tuple]]) -> _Part:
    """Stack parsed records into columns: one conversion for all per-case lists, not one per record."""
    table = pd.DataFrame([p[0] for p in parsed], columns=list(COLUMNS))
    lengths = np.fromiter((len(p[1][0]) for p in parsed), dtype=np.int64, count=len(parsed))
    flat = [np.array(list(chain.from_iterable(p[1][k] for p in parsed)), dtype=dtype)
            for k, dtype in ((0, np.int64), (1, np.float64), (2, np.float64))]
    return _Part(table, lengths, *flat)


def _read_batch(run_dirs: list[Path]) -> _Part:
    parsed: list[tuple[dict, tuple]] = []
    skipped: list[Skip] = []
    not_completed = 0
    for run_dir in run_dirs:
        state, recs, skips = read_run_dir(run_dir)
        if state not in ("completed", "unreadable"):
            not_completed += 1
        parsed.extend(recs)
        skipped.extend(skips)
    part = _to_part(parsed)
    part.skipped, part.not_completed, part.n_dirs = skipped, not_completed, len(run_dirs)
    return part


def _read_all(run_dirs: list[Path], workers: int) -> list[_Part]:
    """Read run dirs; with many, split them between this process and ``workers - 1`` others (JSON
    parsing is the cost, and it is CPU-bound)."""
    if workers <= 1 or len(run_dirs) < PARALLEL_MIN_DIRS:
        return [_read_batch(run_dirs)]
    size = -(-len(run_dirs) // workers)
    batches = [run_dirs[i:i + size] for i in range(0, len(run_dirs), size)]
    with ProcessPoolExecutor(max_workers=len(batches) - 1) as pool:
        futures = [pool.submit(_read_batch, b) for b in batches[1:]]
        first = _read_batch(batches[0])
        return [first, *(f.result() for f in futures)]


def _finish(parts: list[_Part]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Concatenate parts in order and drop duplicate (run_id, stage, judge) records, the first winning."""
    parts = [p for p in parts if len(p.table)]
    if not parts:
        return pd.DataFrame(columns=list(COLUMNS)), _empty_cases(), 0
    table = pd.concat([p.table for p in parts], ignore_index=True) if len(parts) > 1 else parts[0].table
    lengths = np.concatenate([p.lengths for p in parts])
    dup = table.duplicated(["run_id", "stage", "judge", "eval_id"]).to_numpy()
    keep_case = np.repeat(~dup, lengths)
    table = table[~dup].reset_index(drop=True)
    lengths = lengths[~dup]
    if not lengths.sum():
        return table, _empty_cases(), int(dup.sum())
    cases = pd.DataFrame({
        "row": np.repeat(np.arange(len(table)), lengths),
        **{name: np.concatenate([getattr(p, attr) for p in parts])[keep_case]
           for name, attr in (("case", "cases"), ("safety", "safety"), ("helpfulness", "helpfulness"))},
    })
    return table, cases, int(dup.sum())


def build_tables(parsed: list[tuple[dict, tuple]]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Turn parsed records into the tidy table and the per-case table, deduplicated by run, stage, judge.

    The first record of a (run_id, stage, judge) wins: local roots come first, so a W&B copy of a local
    run is dropped. Returns the tables and the number of duplicates dropped.
    """
    return _finish([_to_part(list(parsed))])


def _empty_cases() -> pd.DataFrame:
    return pd.DataFrame({"row": pd.Series(dtype="int64"), "case": pd.Series(dtype="int64"),
                         "safety": pd.Series(dtype="float64"), "helpfulness": pd.Series(dtype="float64")})


def collect(roots: Iterable[str | os.PathLike[str]], *, extra: Iterable[tuple[dict, tuple]] = (),
            extra_skipped: Iterable[Skip] = (), extra_not_completed: int = 0,
            workers: int | None = None) -> Collection:
    """Collect every completed run record under the roots (plus ``extra`` records, e.g. from W&B)."""
    roots = [Path(r) for r in roots]
    run_dirs = list(find_run_dirs(roots))
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    parts = _read_all(run_dirs, workers)
    extra = list(extra)
    if extra:
        parts.append(_to_part(extra))
    table, cases, dups = _finish(parts)
    skipped = _import_skips(roots) + [s for p in parts for s in p.skipped] + list(extra_skipped)
    not_completed = extra_not_completed + sum(p.not_completed for p in parts)
    return Collection(table, cases, skipped, not_completed, dups, len(run_dirs))


# ----------------------------------------------------------------------------------------------- W&B


def _pick(d: Mapping[str, Any], *paths: str) -> Any:
    """First non-None value among dotted paths in a (possibly nested or flattened) W&B config."""
    for path in paths:
        if path in d and d[path] is not None:
            value = d[path]
        else:
            value = d
            for part in path.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
                if value is None:
                    break
        if isinstance(value, Mapping) and "value" in value:  # W&B's raw config wraps values
            value = value["value"]
        if value is not None:
            return value
    return None


#: Metric keys the training side may log per stage, bare or under an ``estimate/`` (what launch logs),
#: ``eval/`` or ``stage/`` prefix.
_METRIC_KEYS: tuple[str, ...] = (
    "safety", "helpfulness", "stage", "objectives", "judge", "pref_acc_safety", "pref_acc_helpfulness",
    "n_test_cases", "pairs_used", "pairs_dropped", "cases", "case_safety", "case_helpfulness", "run_id",
    "model", "data", "schedule", "beta", "seed", "label_judges", "group",
)


def _wandb_eval(config: Mapping[str, Any]) -> tuple[str, str]:
    setting = _pick(config, "eval")
    if isinstance(setting, Mapping) and setting:
        plain = {k: (v.get("value") if isinstance(v, Mapping) and "value" in v else v) for k, v in setting.items()}
        return eval_id({"eval": plain}), str(plain.get("name") or "estimate")
    return default_eval_id(), "estimate"


def _row_value(row: Mapping[str, Any], key: str) -> Any:
    """``key`` of a W&B history row: bare, under ``eval/<evaluation name>/`` (what launch logs), or under the
    ``estimate/``, ``eval/`` or ``stage/`` prefix of runs logged before."""
    for k in (key, f"estimate/{key}", f"eval/{key}", f"stage/{key}"):
        if row.get(k) is not None:
            return row[k]
    named = [k for k in row if k.startswith("eval/") and k.count("/") == 2 and k.endswith("/" + key)]
    return row[named[0]] if named and row[named[0]] is not None else None


def wandb_record(run: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """Merge one W&B history row with its run's config into our metrics-record shape."""
    config = dict(run.config or {})
    rec: dict[str, Any] = {}
    for key in _METRIC_KEYS:
        value = _row_value(row, key)
        if value is not None:
            rec[key] = value
    stages = _pick(config, "schedule.stages") or []
    fallbacks = {
        "run_id": _pick(config, "run_id") or getattr(run, "name", None) or run.id,
        "group": getattr(run, "group", None) or _pick(config, "group"),
        "model": _pick(config, "model.name", "model"),
        "data": _pick(config, "data.name", "data"),
        "judge": _pick(config, "data.judge", "judge"),
        "schedule": _pick(config, "schedule.name", "schedule"),
        "beta": _pick(config, "trainer.beta", "beta"),
        "seed": _pick(config, "seed"),
    }
    for key, value in fallbacks.items():
        if rec.get(key) is None and value is not None and not isinstance(value, Mapping):
            rec[key] = value
    if rec.get("objectives") is None and rec.get("stage") is not None:
        try:
            rec["objectives"] = list(stages)[: int(rec["stage"])]
        except (TypeError, ValueError):
            pass
    if not rec.get("eval_id"):  # the resolved config names the setting; runs logged before settings: the default
        rec["eval_id"], rec["eval_name"] = _wandb_eval(config)
    if rec.get("label_judges") is None and rec.get("objectives") is not None and rec.get("judge"):
        rec["label_judges"] = [rec["judge"]] * len(rec["objectives"])
    return rec


def read_wandb(api: Any, path: str, group: str | None = None
               ) -> tuple[list[tuple[dict, tuple]], list[Skip], int]:
    """Read our runs from the W&B API (``wandb.Api()`` or a recorded stand-in).

    Each history row that carries ``safety`` and ``helpfulness`` is one stage record; the run's config
    fills in model, data, judge, schedule, beta and seed. Returns (records, skipped, not_completed).
    """
    filters = {"group": group} if group else None
    parsed: list[tuple[dict, tuple]] = []
    skipped: list[Skip] = []
    not_completed = 0
    for run in api.runs(path, filters=filters):
        name = f"wandb:{path}/{run.id}"
        if getattr(run, "state", "finished") != "finished":
            not_completed += 1
            continue
        found = 0
        for i, row in enumerate(run.scan_history()):
            if _row_value(row, "safety") is None:
                continue
            found += 1
            try:
                parsed.append(parse_record(wandb_record(run, row), group=group or "", source="wandb"))
            except ValueError as exc:
                skipped.append(Skip(f"{name}:history[{i}]", f"{exc!s:.300}"))
        if not found:
            skipped.append(Skip(name, "finished W&B run without safety/helpfulness in its history"))
    return parsed, skipped, not_completed
