"""How far two judges agree on the same trajectories: matching, statistics, tables and heatmaps.

The study labelled every trajectory with two judges (gpt-5-mini and Qwen3-32B) and trained on either set of
labels; how far those labels agree bounds how much a result can depend on the choice of judge. Per metric
(safety, helpfulness) this module reports exact agreement, agreement within one point, quadratic-weighted
Cohen's kappa, each judge's mean and the confusion matrix.

Scores are on ToolEmu's 0-3 scale; a judge's score of a trajectory is the median of its replicates, so a
half (1.5) appears where an even number of replicates split. Nothing is binned:

* kappa weighs a disagreement by the squared difference of the two *scores*
  (``w = (x - y)^2``), which for integer scores is exactly Cohen's quadratic weights on the 0-3 categories,
  and for halves is the same quadratic penalty on the same scale. (Weights by category *index*, as
  ``sklearn.metrics.cohen_kappa_score`` takes them, would shift when a score is absent from both judges or
  when halves appear; weights on the scale do not.)
* the confusion matrix has a row and a column per point of the 0-3 grid, plus the half points when any
  score is a half.

The statistics are plain Python on score lists (a few thousand pairs take milliseconds); the figures import
seaborn only when drawn.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from agent_safety.store.io import atomic_write

if TYPE_CHECKING:
    from agent_safety.data.toolemu import Trajectory

METRICS = ("safety", "helpfulness")
SCALE = (0.0, 3.0)
#: ``(agent folder's last name, file stem without the judge part, line, case index)``: the same trajectory
#: under both judges' folders (the study's eval files differ only in the ``_eval-<judge model>`` part).
Key = tuple[str, str, int, int]
#: Trajectory identity -> metric -> score (None: the judge gave no parseable score).
Labels = Mapping[Key, Mapping[str, float | None]]
_JUDGE_PART = re.compile(r"_eval-.+?(?=_int\d|_r\d+-\d+)")


# ------------------------------------------------------------------------------------------- statistics


def quadratic_kappa(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cohen's kappa with quadratic weights ``(x - y)^2`` on the scores themselves.

    ``1 - observed / expected``, where observed is the mean squared difference of the paired scores and
    expected is the mean squared difference of every score of ``a`` with every score of ``b`` (the two judges
    labelling independently with their own marginals), which in closed form is
    ``var(a) + var(b) + (mean(a) - mean(b))^2`` (population variances). None when expected is 0: both judges
    gave one and the same score to everything, where kappa is undefined.
    """
    n = _check_pairs(a, b)
    mean_a, mean_b = sum(a) / n, sum(b) / n
    observed = sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / n
    expected = (sum((x - mean_a) ** 2 for x in a) / n + sum((y - mean_b) ** 2 for y in b) / n
                + (mean_a - mean_b) ** 2)
    return None if expected == 0 else 1.0 - observed / expected


def score_grid(values: Iterable[float]) -> list[float]:
    """The confusion matrix's rows and columns: 0, 1, 2, 3, with the half points when any score is a half."""
    values = list(values)
    for v in values:
        if not SCALE[0] <= v <= SCALE[1] or v * 2 != int(v * 2):
            raise ValueError(f"score {v!r} is not on the 0-3 scale in steps of 0.5")
    step = 0.5 if any(v != int(v) for v in values) else 1.0
    n = int((SCALE[1] - SCALE[0]) / step)
    return [SCALE[0] + i * step for i in range(n + 1)]


def confusion(a: Sequence[float], b: Sequence[float], grid: Sequence[float]) -> list[list[int]]:
    """Counts of (a's score, b's score): row i is ``a == grid[i]``, column j is ``b == grid[j]``."""
    _check_pairs(a, b)
    index = {v: i for i, v in enumerate(grid)}
    matrix = [[0] * len(grid) for _ in grid]
    for x, y in zip(a, b, strict=True):
        if x not in index or y not in index:
            raise ValueError(f"score pair ({x!r}, {y!r}) is not on the grid {list(grid)}")
        matrix[index[x]][index[y]] += 1
    return matrix


def _check_pairs(a: Sequence[float], b: Sequence[float]) -> int:
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length ({len(a)} and {len(b)})")
    if not a:
        raise ValueError("no paired scores to compare")
    return len(a)


@dataclass(frozen=True)
class MetricAgreement:
    """Two judges' agreement on one metric over the trajectories both scored."""

    n: int
    exact: float
    """Share of trajectories with the same score."""
    within_one: float
    """Share whose scores differ by at most one point."""
    kappa: float | None
    """Quadratic-weighted Cohen's kappa (None when undefined)."""
    mean_a: float
    mean_b: float
    grid: list[float]
    matrix: list[list[int]]
    """Rows: judge a's score on ``grid``; columns: judge b's."""


def metric_agreement(a: Sequence[float], b: Sequence[float]) -> MetricAgreement:
    n = _check_pairs(a, b)
    pairs = list(zip(a, b, strict=True))
    grid = score_grid([*a, *b])
    return MetricAgreement(n=n, exact=sum(x == y for x, y in pairs) / n,
                           within_one=sum(abs(x - y) <= 1 for x, y in pairs) / n, kappa=quadratic_kappa(a, b),
                           mean_a=sum(a) / n, mean_b=sum(b) / n, grid=grid, matrix=confusion(a, b, grid))


# -------------------------------------------------------------------------------------------- matching


def trajectory_key(t: Trajectory) -> Key:
    """The identity of a trajectory across judges' folders, from its ``file:line`` source and case.

    The judge's own part of the file name (``_eval-gpt-5-mini`` / ``_eval-Qwen_Qwen3-32B``) is dropped; only
    the agent folder's last name is kept, because the study filed one gpt5m run one folder deeper than its q32
    twin. The case index is part of the key, so a line that holds another case under the other judge is
    reported unmatched rather than compared.
    """
    path, _, line = t.source.rpartition(":")
    stem = _JUDGE_PART.sub("_eval-*", PurePath(path).stem, count=1)
    return PurePath(t.agent).name, stem, int(line), t.case_idx


def labels_of(trajectories: Iterable[Trajectory], where: str) -> dict[Key, dict[str, float | None]]:
    """Each trajectory's scores by identity; two trajectories with one identity are an error in ``where``."""
    out: dict[Key, dict[str, float | None]] = {}
    for t in trajectories:
        key = trajectory_key(t)
        if key in out:
            raise ValueError(f"{where}: two trajectories with the identity {key} ({t.source})")
        out[key] = dict(t.scores)
    return out


@dataclass
class Comparison:
    """Judge ``a`` against judge ``b`` on the trajectories both labelled."""

    a: str
    b: str
    matched: int
    only_a: int
    """Trajectories judge a labelled that b's data does not hold."""
    only_b: int
    metrics: dict[str, MetricAgreement]
    unscored: dict[str, dict[str, int]] = field(default_factory=dict)
    """Metric -> judge -> matched trajectories left out because that judge gave no score."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(a: str, a_labels: Labels, b: str, b_labels: Labels, metrics: Sequence[str] = METRICS) -> Comparison:
    """Match the two judges' labels by trajectory identity and compute each metric's agreement."""
    if a == b:
        raise ValueError(f"both judges are named {a!r}: give them different names")
    common = [k for k in a_labels if k in b_labels]
    if not common:
        raise ValueError(f"no trajectory of {a} ({len(a_labels):,}) matches one of {b} ({len(b_labels):,}): "
                         "are they labels of the same trajectories?")
    out, unscored = {}, {}
    for metric in metrics:
        pairs = [(a_labels[k].get(metric), b_labels[k].get(metric)) for k in common]
        unscored[metric] = {a: sum(x is None for x, _ in pairs), b: sum(y is None for _, y in pairs)}
        both = [(x, y) for x, y in pairs if x is not None and y is not None]
        if both:
            out[metric] = metric_agreement([x for x, _ in both], [y for _, y in both])
    return Comparison(a=a, b=b, matched=len(common), only_a=len(a_labels) - len(common),
                      only_b=len(b_labels) - len(common), metrics=out, unscored=unscored)


# ---------------------------------------------------------------------------------------------- output

COLUMNS = ("judge_a", "judge_b", "metric", "n", "exact", "within_one", "kappa", "mean_a", "mean_b")


def table_rows(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """One row per comparison and metric: the table of the Markdown and CSV files."""
    return [{"judge_a": c.a, "judge_b": c.b, "metric": m, "n": s.n, "exact": s.exact, "within_one": s.within_one,
             "kappa": s.kappa, "mean_a": s.mean_a, "mean_b": s.mean_b}
            for c in comparisons for m, s in c.metrics.items()]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{round(value, 3) + 0.0:.3f}"  # + 0.0: no "-0.000" for a kappa a rounding error below zero
    return f"{value:,}" if isinstance(value, int) else str(value)


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            .rstrip() for r in rows]


def _grid_label(v: float) -> str:
    return f"{v:g}"


def format_comparison(c: Comparison) -> str:
    """The printed report of one comparison: counts, the agreement table and each confusion matrix."""
    lines = [f"{c.a} vs {c.b}: {c.matched:,} matched trajectories "
             f"(unmatched: {c.only_a:,} only {c.a}, {c.only_b:,} only {c.b})"]
    for metric, counts in c.unscored.items():
        if any(counts.values()):
            lines.append(f"  {metric}: left out unscored by " + ", ".join(f"{j} {n:,}" for j, n in counts.items()))
    head = ["metric", "n", "exact", "within 1", "kappa", f"mean {c.a}", f"mean {c.b}"]
    lines += ["", *_aligned([head] + [[m, _fmt(s.n), _fmt(s.exact), _fmt(s.within_one), _fmt(s.kappa),
                                       _fmt(s.mean_a), _fmt(s.mean_b)] for m, s in c.metrics.items()])]
    for metric, s in c.metrics.items():
        lines += ["", f"{metric}: rows {c.a}, columns {c.b}"]
        lines += _aligned([["", *map(_grid_label, s.grid)]] +
                          [[_grid_label(g), *(f"{v:,}" for v in row)] for g, row in zip(s.grid, s.matrix, strict=True)])
    return "\n".join(lines)


def markdown_table(comparisons: Sequence[Comparison]) -> str:
    head = ["judge a", "judge b", "metric", "n", "exact", "within 1", "quadratic κ", "mean a", "mean b"]
    rows = [[_fmt(r[c]) for c in COLUMNS] for r in table_rows(comparisons)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 6) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for c in comparisons:
        for metric, s in c.metrics.items():
            lines += ["", f"**{metric}**: rows {c.a}, columns {c.b}", "",
                      "| " + " | ".join(["", *map(_grid_label, s.grid)]) + " |",
                      "|---|" + "---:|" * len(s.grid)]
            lines += ["| " + " | ".join([f"**{_grid_label(g)}**", *(f"{v:,}" for v in row)]) + " |"
                      for g, row in zip(s.grid, s.matrix, strict=True)]
    return "\n".join(lines) + "\n"


def csv_table(comparisons: Sequence[Comparison]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows(comparisons))
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "judge"


def heatmap(c: Comparison, metric: str, out: Path) -> list[Path]:
    """The confusion matrix of one metric as a seaborn heatmap (PNG and PDF): counts written in the cells,
    colour by share of the row, so a judge's rare scores show where the other judge puts them too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    s = c.metrics[metric]
    ticks = [_grid_label(g) for g in s.grid]
    shares = [[v / max(sum(row), 1) for v in row] for row in s.matrix]
    fig, ax = plt.subplots(figsize=(1.1 * len(ticks) + 3.0, 0.9 * len(ticks) + 1.6))
    sns.heatmap(shares, annot=[[f"{v:,}" for v in row] for row in s.matrix], fmt="", cmap="Blues", vmin=0, vmax=1,
                xticklabels=ticks, yticklabels=ticks, square=True, linewidths=0.5, linecolor="white",
                cbar_kws={"label": f"share of the {c.a} row"}, ax=ax)
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel(f"{c.b} score")
    ax.set_ylabel(f"{c.a} score")
    kappa = "n/a" if s.kappa is None else f"{s.kappa:.3f}"
    ax.set_title(f"{metric}: n = {s.n:,}, exact {s.exact:.2f}, within 1 {s.within_one:.2f}, κ {kappa}", fontsize=9)
    paths = []
    for fmt in ("png", "pdf"):
        path = out / f"confusion_{_slug(c.a)}_vs_{_slug(c.b)}_{metric}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def write_report(out: Path, payload: Mapping[str, Any], comparisons: Sequence[Comparison],
                 figures: bool = True) -> list[Path]:
    """``judges.json`` (``payload`` plus every comparison), ``judges.md``, ``judges.csv`` and the heatmaps."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {**payload, "comparisons": [c.to_dict() for c in comparisons]}
    written = {out / "judges.json": json.dumps(doc, indent=2) + "\n", out / "judges.md": markdown_table(comparisons),
               out / "judges.csv": csv_table(comparisons)}
    for path, text in written.items():
        atomic_write(path, text, durable=False)
    paths = list(written)
    if figures:
        paths += [p for c in comparisons for m in c.metrics for p in heatmap(c, m, out)]
    return paths
