"""Atomic writes: a killed job leaves the old file (or folder) or the new one, never half of one."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: Path, text: str, durable: bool = True) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place.

    ``durable`` also fsyncs before the rename (run records); bulk imports that can be redone skip it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def aside_dir(target: Path) -> Path:
    """Where :func:`replace_dir` keeps the old folder while the new one is renamed in."""
    return target.with_name(f".{target.name}.old")


def recover_dir(target: Path) -> None:
    """Undo a :func:`replace_dir` killed between its renames: the old folder, set aside, goes back in place
    if no new one made it there, and is dropped if one did."""
    aside = aside_dir(target)
    if not aside.exists():
        return
    if target.exists():
        shutil.rmtree(aside)
    else:
        os.replace(aside, target)


def replace_dir(target: Path, save: Any) -> None:
    """Fill a temporary folder beside ``target`` with ``save(folder)`` and rename it into place whole: a
    killed job leaves the old folder or the new one, never half of one.

    The old folder is renamed aside before the new one goes in, and deleted only after, so a job killed
    between the renames leaves it aside; the next call (or :func:`recover_dir`) puts it back. A job killed
    while filling the temporary folder leaves it behind; the next call deletes it (callers hold the lock of
    whatever they write, so no other job is filling it).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    for stale in target.parent.glob(f".{glob.escape(target.name)}-*"):  # a killed call's half-filled folder
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        aside = aside_dir(target)
        if target.exists():
            os.replace(target, aside)
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_writable(folder: Path) -> str | None:
    """None if files can be created in ``folder`` (made if missing), else what stopped it, on one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"{e.filename or folder}: {e.strerror or e}"
    return None


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path`` (``default`` when there is none); a broken file is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
