"""The package keeps its floors (pyproject.toml's [tool.importlinter]) and each choice list is written once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent_safety.config.validate import EVAL_METHODS
from agent_safety.evaluate.base import METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_every_eval_method_has_an_evaluator() -> None:
    assert sorted(METHODS) == sorted(EVAL_METHODS)


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
