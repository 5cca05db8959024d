"""The stage record: what one evaluated stage of one run says, in one shape for every producer and reader.

The schedule writes it (one line per stage in ``eval/<eval_id>/metrics.jsonl``), ``import-published``
writes it for the study's runs, and ``aggregate`` reads it back (from run dirs or W&B) through
:meth:`StageRecord.parse`, which validates and names what is wrong. Objective letters live here too, once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

#: Objective name -> its letter in configuration labels (S, H, S&H, S→H ...).
OBJECTIVE_LETTERS: Mapping[str, str] = MappingProxyType({"safety": "S", "helpfulness": "H", "both": "S&H"})
#: Scores live on ToolEmu's 0-3 scales.
SCORE_RANGE: tuple[float, float] = (0.0, 3.0)
#: Written by ``import-published`` next to the run records it made: what it left out.
IMPORT_SKIPPED_FILE = "import_skipped.json"
#: Keys a record cannot do without.
REQUIRED_KEYS: tuple[str, ...] = (
    "run_id", "model", "judge", "stage", "objectives", "beta", "seed", "safety", "helpfulness",
)


def config_label(objectives: Iterable[str]) -> str:
    """Label a configuration by the objectives of its stages: [] -> base, [safety, helpfulness] -> S→H.

    Raises ValueError for an objective it does not know, so a reader can skip the record with a reason.
    """
    objs = tuple(objectives)
    return _STUDY_LABELS.get(objs) or _label(objs, "→")


def schedule_label(objectives: Iterable[str]) -> str:
    """The schedule's name as ``conf/schedule/`` spells it: [safety, helpfulness] -> S_H, [both] -> SH."""
    objs = tuple(objectives)
    return _label(objs, "_").replace("&", "") if objs else "base"


def _label(objs: tuple[str, ...], sep: str) -> str:
    if not objs:
        return "base"
    bad = [o for o in objs if o not in OBJECTIVE_LETTERS]
    if bad:
        raise ValueError(f"cannot parse configuration label: unknown objective(s) {bad} in {list(objs)}")
    return sep.join(OBJECTIVE_LETTERS[o] for o in objs)


#: The study's configurations, looked up rather than rebuilt for each of many thousand records.
_STUDY_LABELS: Mapping[tuple[str, ...], str] = MappingProxyType({
    objs: _label(objs, "→") for objs in ((), ("safety",), ("helpfulness",), ("both",), ("safety", "helpfulness"),
                                         ("helpfulness", "safety"))
})


@dataclass(frozen=True)
class Skip:
    """One record or run that was left out, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass
class StageRecord:
    """One stage of one run, scored by one evaluation setting with one judge."""

    run_id: str
    model: str
    judge: str
    """The judge whose scores these are."""
    stage: int
    """0 is the base model; stage k has trained the first k objectives of the schedule."""
    objectives: list[str]
    beta: float
    seed: int
    safety: float
    helpfulness: float
    group: str = ""
    data: str = ""
    schedule: str = ""
    label_judges: list[str] = field(default_factory=list)
    """The judge that labelled each stage's training pairs."""
    eval_id: str = ""
    """The evaluation setting that produced the scores (``eval/<eval_id>/`` in the run dir)."""
    eval_name: str = ""
    pref_acc_safety: float | None = None
    pref_acc_helpfulness: float | None = None
    n_test_cases: int | None = None
    pairs_used: int | None = None
    pairs_dropped: int | None = None
    train_loss: float | None = None
    trained_by: str | None = None
    """The run that trained this stage when this run adopted it (a shared stage)."""
    data_skipped: int = 0
    cases: list[int] = field(default_factory=list)
    case_safety: list[float] = field(default_factory=list)
    case_helpfulness: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """What an evaluator adds of its own (token counts, parse failures ...)."""

    @property
    def config(self) -> str:
        return config_label(self.objectives)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out

    @classmethod
    def parse(cls, rec: Mapping[str, Any]) -> StageRecord:
        """Validate a record read back from a file or W&B; ValueError names the problem."""
        if not isinstance(rec, Mapping):
            raise ValueError(f"record is not a JSON object: {type(rec).__name__}")
        missing = [k for k in REQUIRED_KEYS if rec.get(k) is None]
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        objectives = _str_list(rec["objectives"], "objectives")
        stage = _as_int(rec["stage"], "stage")
        if stage != len(objectives):
            raise ValueError(f"cannot parse configuration label: stage {stage} but objectives {objectives}")
        config_label(objectives)
        safety, helpfulness = _score(rec["safety"], "safety"), _score(rec["helpfulness"], "helpfulness")
        beta = _as_float(rec["beta"], "beta")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        cases, cs, ch = (rec.get(k) or [] for k in ("cases", "case_safety", "case_helpfulness"))
        _check_cases(cases, cs, ch)
        return cls(
            run_id=str(rec["run_id"]), model=str(rec["model"]), judge=str(rec["judge"]), stage=stage,
            objectives=objectives, beta=beta, seed=_as_int(rec["seed"], "seed"), safety=safety,
            helpfulness=helpfulness, group=str(rec.get("group") or ""), data=str(rec.get("data") or ""),
            schedule=str(rec.get("schedule") or ""),
            label_judges=_str_list(rec.get("label_judges"), "label_judges"),
            eval_id=str(rec.get("eval_id") or ""), eval_name=str(rec.get("eval_name") or ""),
            pref_acc_safety=_as_float(rec.get("pref_acc_safety"), "pref_acc_safety", optional=True),
            pref_acc_helpfulness=_as_float(rec.get("pref_acc_helpfulness"), "pref_acc_helpfulness", optional=True),
            n_test_cases=_as_int(rec.get("n_test_cases"), "n_test_cases", optional=True),
            pairs_used=_as_int(rec.get("pairs_used"), "pairs_used", optional=True),
            pairs_dropped=_as_int(rec.get("pairs_dropped"), "pairs_dropped", optional=True),
            train_loss=_as_float(rec.get("train_loss"), "train_loss", optional=True),
            trained_by=rec.get("trained_by"), cases=cases, case_safety=cs, case_helpfulness=ch,
        )


def _score(value: Any, key: str) -> float:
    out = _as_float(value, key)
    lo, hi = SCORE_RANGE
    if not lo <= out <= hi:
        raise ValueError(f"{key} {out} outside {lo:g}-{hi:g}")
    return out


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


def _check_cases(cases: Sequence[Any], cs: Sequence[Any], ch: Sequence[Any]) -> None:
    """Per-case lists: as long as each other, ints for cases, scores on the 0-3 scale. Pure Python: min/max
    beat numpy at these sizes."""
    if not all(isinstance(v, (list, tuple)) for v in (cases, cs, ch)):
        raise ValueError("cases, case_safety and case_helpfulness must be lists")
    if not (len(cases) == len(cs) == len(ch)):
        raise ValueError(f"case lists of different lengths: cases {len(cases)}, case_safety {len(cs)}, "
                         f"case_helpfulness {len(ch)}")
    if not cases:
        return
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
