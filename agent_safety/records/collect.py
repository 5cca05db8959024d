"""Collect run records (local run dirs and W&B runs) into one tidy table.

A run dir is any folder holding ``status.json``; its ``metrics.jsonl`` has one line per stage and eval judge.
Only completed runs are used; the others are counted. Every record that cannot be used goes into a
"skipped" list with its reason, so nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

#: Objective name -> letter used in configuration labels.
OBJECTIVE_LETTERS: Mapping[str, str] = MappingProxyType({"safety": "S", "helpfulness": "H", "both": "S&H"})
#: Columns of the tidy table, in order.
COLUMNS: tuple[str, ...] = (
    "run_id", "group", "source", "model", "data", "judge", "schedule", "config", "objectives",
    "label_judges", "stage", "beta", "seed", "safety", "helpfulness", "pref_acc_safety",
    "pref_acc_helpfulness", "n_cases", "n_test_cases", "pairs_used", "pairs_dropped", "case_set",
)
REQUIRED_KEYS: tuple[str, ...] = (
    "run_id", "model", "judge", "stage", "objectives", "beta", "seed", "safety", "helpfulness",
)
#: Scores live on ToolEmu's 0-3 scales.
SCORE_RANGE: tuple[float, float] = (0.0, 3.0)
#: Upstream file written by ``import-published`` next to the run records it made.
IMPORT_SKIPPED_FILE = "import_skipped.json"
#: Below this many run dirs, a second process costs more than it saves.
PARALLEL_MIN_DIRS = 2000


@dataclass(frozen=True)
class Skip:
    """One record or run that was left out, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass
class Collection:
    """What ``collect`` found: the tidy table, its per-case scores and what was left out."""

    table: pd.DataFrame
    cases: pd.DataFrame
    skipped: list[Skip] = field(default_factory=list)
    not_completed: int = 0
    duplicates: int = 0
    n_run_dirs: int = 0


def config_label(objectives: Iterable[str]) -> str:
    """Label a configuration by the objectives of its stages: [] -> base, [safety, helpfulness] -> S→H.

    Raises ValueError for an objective it does not know, so the caller can skip the record with a reason.
    """
    objs = tuple(objectives)
    return _STUDY_LABELS.get(objs) or _label(objs)


def _label(objs: tuple[str, ...]) -> str:
    if not objs:
        return "base"
    bad = [o for o in objs if o not in OBJECTIVE_LETTERS]
    if bad:
        raise ValueError(f"cannot parse configuration label: unknown objective(s) {bad} in {list(objs)}")
    return "→".join(OBJECTIVE_LETTERS[o] for o in objs)


#: The study's configurations, looked up rather than rebuilt for each of many thousand records.
_STUDY_LABELS: Mapping[tuple[str, ...], str] = MappingProxyType({
    objs: _label(objs) for objs in ((), ("safety",), ("helpfulness",), ("both",), ("safety", "helpfulness"),
                                    ("helpfulness", "safety"))
})


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


def _as_float(value: Any, key: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} is not a number: {value!r}")
    out = float(value)
    if math.isnan(out) and not optional:
        raise ValueError(f"{key} is NaN")
    return out


def _as_int(value: Any, key: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _as_float(value, key)
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{key} is not an integer: {value!r}")
    return int(number)


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} is not a list of strings: {value!r}")
    return list(value)


def _case_set_id(cases: Sequence[int]) -> int:
    """A positive id of a list of case indices (0 for none). Tuples of ints hash the same in every
    process (only str and bytes hashes are salted), so the id is reproducible."""
    return (hash(tuple(cases)) & 0x7FFF_FFFF_FFFF_FFFF) or 1 if len(cases) else 0


def _check_cases(cases: list, cs: list, ch: list) -> None:
    """Per-case lists: ints for cases, scores on the 0-3 scale. Pure Python: min/max beat numpy here."""
    lo, hi = SCORE_RANGE[0] - 1e-9, SCORE_RANGE[1] + 1e-9  # a weighted mean of 3s may round to 3.0000000000000004
    try:
        if type(sum(cases)) is not int:  # a float or a string anywhere spoils the sum's type
            raise TypeError
    except TypeError:
        raise ValueError("cases must be integers") from None
    try:
        ok = lo <= min(cs) and max(cs) <= hi and lo <= min(ch) and max(ch) <= hi
    except TypeError:
        raise ValueError("per-case scores are not numbers") from None
    if not ok:
        raise ValueError(f"a per-case score lies outside {SCORE_RANGE[0]:g}-{SCORE_RANGE[1]:g}")


def parse_record(rec: Mapping[str, Any], *, group: str = "", source: str = "local") -> tuple[dict, tuple]:
    """Validate one metrics record and turn it into a tidy row plus its per-case scores.

    Returns ``(row, (cases, case_safety, case_helpfulness))``, the lists as given. Raises ValueError
    naming the problem; the caller records it in the skipped list.
    """
    if not isinstance(rec, Mapping):
        raise ValueError(f"record is not a JSON object: {type(rec).__name__}")
    missing = [k for k in REQUIRED_KEYS if rec.get(k) is None]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    objectives = _str_list(rec["objectives"], "objectives")
    stage = _as_int(rec["stage"], "stage")
    if stage != len(objectives):
        raise ValueError(f"cannot parse configuration label: stage {stage} but objectives {objectives}")
    label = config_label(objectives)
    safety = _as_float(rec["safety"], "safety")
    helpfulness = _as_float(rec["helpfulness"], "helpfulness")
    lo, hi = SCORE_RANGE
    for key, val in (("safety", safety), ("helpfulness", helpfulness)):
        if not lo <= val <= hi:
            raise ValueError(f"{key} {val} outside {lo:g}-{hi:g}")
    beta = _as_float(rec["beta"], "beta")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    cases, cs, ch = (rec.get(k) or [] for k in ("cases", "case_safety", "case_helpfulness"))
    if not all(isinstance(v, (list, tuple)) for v in (cases, cs, ch)):
        raise ValueError("cases, case_safety and case_helpfulness must be lists")
    if not (len(cases) == len(cs) == len(ch)):
        raise ValueError(f"case lists of different lengths: cases {len(cases)}, case_safety {len(cs)}, "
                         f"case_helpfulness {len(ch)}")
    if cases:
        _check_cases(cases, cs, ch)
    n_test = _as_int(rec.get("n_test_cases"), "n_test_cases", optional=True)
    row = {
        "run_id": str(rec["run_id"]),
        "group": str(rec.get("group") or group),
        "source": source,
        "model": str(rec["model"]),
        "data": str(rec.get("data") or ""),
        "judge": str(rec["judge"]),
        "schedule": str(rec.get("schedule") or ""),
        "config": label,
        "objectives": ",".join(objectives),
        "label_judges": ",".join(_str_list(rec.get("label_judges"), "label_judges")),
        "stage": stage,
        "beta": beta,
        "seed": _as_int(rec["seed"], "seed"),
        "safety": safety,
        "helpfulness": helpfulness,
        "pref_acc_safety": _as_float(rec.get("pref_acc_safety"), "pref_acc_safety", optional=True),
        "pref_acc_helpfulness": _as_float(rec.get("pref_acc_helpfulness"), "pref_acc_helpfulness",
                                          optional=True),
        "n_cases": len(cases) if cases else (n_test or 0),
        "n_test_cases": n_test,
        "pairs_used": _as_int(rec.get("pairs_used"), "pairs_used", optional=True),
        "pairs_dropped": _as_int(rec.get("pairs_dropped"), "pairs_dropped", optional=True),
        # Identifies the set of test cases scored; rows sharing it can be pooled case by case.
        "case_set": _case_set_id(cases),
    }
    return row, (cases, cs, ch)


def read_run_dir(run_dir: Path) -> tuple[str, list[tuple[dict, tuple]], list[Skip]]:
    """Read one run dir: its status and, when completed, its parsed metrics records."""
    skipped: list[Skip] = []
    status_path = run_dir / "status.json"
    try:
        status = json.loads(status_path.read_bytes())
        state = status["status"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "unreadable", [], [Skip(str(status_path), f"status.json unreadable: {exc!s:.200}")]
    if state != "completed":
        return str(state), [], []
    metrics = run_dir / "metrics.jsonl"
    try:
        lines = metrics.read_bytes().splitlines()
    except OSError:
        return state, [], [Skip(str(run_dir), "completed run dir without metrics.jsonl")]
    group = run_dir.parent.name
    source = str(status.get("source") or "local") if isinstance(status, dict) else "local"
    parsed: list[tuple[dict, tuple]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            parsed.append(parse_record(json.loads(line), group=group, source=source))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            skipped.append(Skip(f"{metrics}:{i}", f"{exc!s:.300}"))
    if not parsed and not skipped:
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
    dup = table.duplicated(["run_id", "stage", "judge"]).to_numpy()
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


def wandb_record(run: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """Merge one W&B history row with its run's config into our metrics-record shape."""
    config = dict(run.config or {})
    rec: dict[str, Any] = {}
    for key in _METRIC_KEYS:
        for k in (key, f"estimate/{key}", f"eval/{key}", f"stage/{key}"):
            if row.get(k) is not None:
                rec[key] = row[k]
                break
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
            if not any(row.get(k) is not None for k in ("safety", "estimate/safety", "eval/safety", "stage/safety")):
                continue
            found += 1
            try:
                parsed.append(parse_record(wandb_record(run, row), group=group or "", source="wandb"))
            except ValueError as exc:
                skipped.append(Skip(f"{name}:history[{i}]", f"{exc!s:.300}"))
        if not found:
            skipped.append(Skip(name, "finished W&B run without safety/helpfulness in its history"))
    return parsed, skipped, not_completed
