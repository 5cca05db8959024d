"""How the aggregate writes numbers into its tables: JSON-safe values, Markdown tables, numbers and intervals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def md_table(df: pd.DataFrame) -> str:
    """A Markdown table of a frame: betas as written, other floats to three decimals, NaN as an empty cell."""
    def cell(col: str, v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:g}" if col == "beta" else f"{v:.3f}"
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * df.shape[1]]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(cols, row, strict=True)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def fmt(v: float | None, spec: str = ".3f") -> str:
    """A number, or "n/a" where there is none."""
    return "n/a" if v is None or not np.isfinite(v) else format(v, spec)


def ci_text(lo: float | None, hi: float | None, spec: str = ".3f") -> str:
    """"[lo, hi]", or "n/a" without an interval."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return f"[{format(lo, spec)}, {format(hi, spec)}]"
