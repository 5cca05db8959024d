"""Judged agent trajectories in ToolEmu's published layout.

One loader serves the built-in synthetic benchmark and the study's data: both are laid out as
``<root>/data/raw_data_by_eval/<judge>/<agent>/X.jsonl`` with the two parallel evaluation files
``X_eval_agent_safe.jsonl`` (``ToolCallRisk``) and ``X_eval_agent_help_ignore_safety.jsonl``
(``Helpfulness``), line i of each scoring line i of ``X.jsonl``; toolkit specs are in
``<root>/assets/all_toolkits.json``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

#: The file format, in one place: eval-file suffixes (``X<suffix>.jsonl`` beside ``X.jsonl``) and the score
#: key in each eval record's ``eval_scores``.
SAFE_SUFFIX = "_eval_agent_safe"
HELP_SUFFIX = "_eval_agent_help_ignore_safety"
SAFE_KEY = "ToolCallRisk"
HELP_KEY = "Helpfulness"
#: Our metric name -> (eval file suffix, score key in ``eval_scores``).
METRIC_FILES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"safety": (SAFE_SUFFIX, SAFE_KEY), "helpfulness": (HELP_SUFFIX, HELP_KEY)})


class DataError(ValueError):
    """A bad data file; the message names the file and line."""


@dataclass(frozen=True)
class Step:
    """One tool call of the agent: its reasoning and call, and what the (emulated) tool returned."""

    thought: str
    """The agent's log for this step: thought, ``Action:`` and ``Action Input:`` lines."""
    tool: str
    tool_input: str
    observation: str


@dataclass(frozen=True)
class Trajectory:
    case_idx: int
    agent: str
    steps: tuple[Step, ...]
    final: str
    """The agent's last log, ending with ``Final Answer: ...``."""
    scores: dict[str, float]
    """``safety`` and ``helpfulness`` on ToolEmu's 0-3 scales."""
    source: str
    """``file:line`` of the record, for error messages and dry runs."""


@dataclass
class Benchmark:
    """Everything the pair builder and the estimate need from one judge's data."""

    judge: str
    cases: dict[int, dict[str, Any]]
    """Case index -> ToolEmu case (``Toolkits``, ``User Instruction``, ...)."""
    toolkits: dict[str, dict[str, Any]]
    """Toolkit name -> spec from ``all_toolkits.json``."""
    trajectories: list[Trajectory]
    fingerprint: str
    """Hash of every data file read: keys the caches built from this data."""
    skipped: list[str] = field(default_factory=list)
    """``file:line: reason`` of records skipped with ``on_error=skip``."""

    @property
    def n_cases(self) -> int:
        return max(self.cases) + 1 if self.cases else 0

    def by_case(self) -> dict[int, list[int]]:
        """Case index -> indices into ``trajectories``."""
        out: dict[int, list[int]] = {}
        for i, t in enumerate(self.trajectories):
            out.setdefault(t.case_idx, []).append(i)
        return out


def median_score(value: Any) -> float:
    """A score, or the median of its replicates (a judge scores a trajectory once or several times; a
    replicate whose score could not be parsed is null and left out)."""
    if isinstance(value, list):
        nums = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not nums:
            raise ValueError(f"no numeric replicate in {value!r}")
        return float(statistics.median(nums))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"score is not a number: {value!r}")


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line number, record or None, error) for each non-empty line; bytes that are not UTF-8 are that
    line's error, like a line that is not JSON."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, None, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                continue
            if not line.strip():
                continue
            try:
                yield n, json.loads(line), None
            except json.JSONDecodeError as e:
                yield n, None, f"unparsable JSON ({e.msg} at column {e.colno})"


def parse_steps(record: dict[str, Any]) -> tuple[tuple[Step, ...], str]:
    """Split ToolEmu's ``intermediate_steps`` into tool-call steps and the final log."""
    steps: list[Step] = []
    final = ""
    for item in record["intermediate_steps"]:
        action, result = item[0], item[1]
        if isinstance(action, dict):  # AgentFinish: {"return_values": {...}, "log": ...}
            final = action.get("log") or action.get("return_values", {}).get("output", "")
            continue
        tool, tool_input, log = action[0], action[1], action[2]
        observation = result[0] if isinstance(result, list) else result
        steps.append(Step(thought=log, tool=tool, tool_input=tool_input, observation=str(observation)))
    if not final:
        output = record.get("output") or ""
        final = f"Final Answer: {output.lstrip(': ')}" if output else ""
    return tuple(steps), final


def _scores(path: Path, key: str, n_expected: int, traj_path: Path, on_error: str,
            skipped: list[str]) -> list[float | None]:
    out: list[float | None] = []
    for n, rec, err in _read_jsonl(path):
        if err is None:
            try:
                score = median_score(rec["eval_scores"][key])
                if not 0 <= score <= 3:
                    err = f"score {key}={score} outside 0-3"
            except (KeyError, TypeError, ValueError) as e:
                err = f"missing or bad eval_scores.{key} ({e!r})"
        if err is not None:
            if on_error == "raise":
                raise DataError(f"{path}:{n}: {err}")
            skipped.append(f"{path}:{n}: {err}")
            score = None
        out.append(score)
    if len(out) != n_expected:
        raise DataError(f"{path}: {len(out)} records but {traj_path.name} has {n_expected}; "
                        "line i of each eval file must score line i of the trajectory file")
    return out


def trajectory_files(root: Path, judge: str) -> list[Path]:
    """Trajectory files of one judge, sorted for a stable order."""
    base = root / "data" / "raw_data_by_eval" / judge
    if not base.is_dir():
        raise DataError(f"{base}: no such folder (data.root={root}, data.judge={judge})")
    return sorted(p for p in base.rglob("*.jsonl") if "_eval_" not in p.name)


def load_benchmark(root: str | Path, judge: str, on_error: str = "raise") -> Benchmark:
    """Read one judge's trajectories and scores; bad records raise or are skipped and listed."""
    root = Path(root)
    toolkits_path = root / "assets" / "all_toolkits.json"
    try:
        toolkits = {t["toolkit"]: t for t in json.loads(toolkits_path.read_text(encoding="utf-8"))}
    except FileNotFoundError:
        raise DataError(f"{toolkits_path}: missing toolkit specs") from None
    except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        raise DataError(f"{toolkits_path}: unreadable toolkit specs ({e})") from None
    digest = hashlib.sha256()
    skipped: list[str] = []
    cases: dict[int, dict[str, Any]] = {}
    trajectories: list[Trajectory] = []
    files = trajectory_files(root, judge)
    if not files:
        raise DataError(f"{root / 'data' / 'raw_data_by_eval' / judge}: no trajectory files")
    for path in files:
        records = list(_read_jsonl(path))
        eval_paths = {m: path.with_name(f"{path.stem}{suf}.jsonl") for m, (suf, _) in METRIC_FILES.items()}
        for p in (path, *eval_paths.values()):
            if not p.exists():
                raise DataError(f"{p}: missing parallel eval file for {path}")
            digest.update(p.name.encode())
            digest.update(p.read_bytes())
        scores = {m: _scores(eval_paths[m], key, len(records), path, on_error, skipped)
                  for m, (_, key) in METRIC_FILES.items()}
        agent = str(path.parent.relative_to(root / "data" / "raw_data_by_eval" / judge))
        for i, (n, rec, err) in enumerate(records):
            if err is None:
                try:
                    case_idx = int(rec["case_idx"])
                    steps, final = parse_steps(rec)
                    cases.setdefault(case_idx, rec["case"])
                except (KeyError, TypeError, ValueError, IndexError) as e:
                    err = f"bad trajectory record ({e!r})"
            if err is not None:
                if on_error == "raise":
                    raise DataError(f"{path}:{n}: {err}")
                skipped.append(f"{path}:{n}: {err}")
                continue
            safety, helpfulness = scores["safety"][i], scores["helpfulness"][i]
            if safety is None or helpfulness is None:
                continue
            trajectories.append(Trajectory(case_idx=case_idx, agent=agent, steps=steps, final=final,
                                           scores={"safety": safety, "helpfulness": helpfulness},
                                           source=f"{path}:{n}"))
    digest.update(toolkits_path.read_bytes())
    return Benchmark(judge=judge, cases=cases, toolkits=toolkits, trajectories=trajectories,
                     fingerprint=digest.hexdigest()[:16], skipped=skipped)
