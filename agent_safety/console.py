"""What a run shows on the terminal, and what goes to its log file instead.

A run prints its header, a progress bar per phase, its stage results and its run dir. Everything libraries
print while it runs (warnings, reminders, W&B's lines, the Trainer's log dicts) goes to the run's
``run.log``, where it can be read when something looks wrong; the project's own warnings (about the config,
the data, a run dir) still reach the terminal. Imports nothing heavy and nothing from the pipeline, so any
layer can use it.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

#: Loggers whose warnings are about the user's input and still reach the terminal during a quiet run.
OWN = "agent_safety"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Routed(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a quiet run: text goes to the log file; ``terminal`` is where the run's
    own lines go. Once the run is over, text written through a stale reference (a library's handler that kept
    it) goes to the terminal, as it did before."""

    def __init__(self, log: TextIO, terminal: TextIO, scrub: Callable[[str], str]) -> None:
        self.log, self.terminal, self.scrub = log, terminal, scrub

    def write(self, text: str) -> int:
        if self.log.closed:
            return self.terminal.write(text)
        self.log.write(self.scrub(text))
        return len(text)

    def flush(self) -> None:
        (self.terminal if self.log.closed else self.log).flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def terminal(err: bool = False) -> TextIO:
    """Where a run's own lines go (``err``: its stderr): the terminal, also while :func:`quiet` sends library
    output to the log."""
    stream = sys.stderr if err else sys.stdout
    return getattr(stream, "terminal", stream)


def say(text: str, err: bool = False) -> None:
    """Print one of the run's own lines on the terminal: results to stdout, what it is doing (``err``) to stderr."""
    print(text, file=terminal(err), flush=True)


def bars_shown() -> bool:
    """Progress bars on a terminal only, and never under ``TQDM_DISABLE``: in a file their redraws are noise."""
    out = terminal(err=True)
    return not os.environ.get("TQDM_DISABLE") and hasattr(out, "isatty") and out.isatty()


def progress(total: int | None, desc: str, initial: int = 0, unit: str = "it") -> Any:
    """A progress bar with an ETA on the terminal's stderr, erased when done (the result line that follows says
    it)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, initial=initial, unit=unit, file=terminal(err=True), leave=False,
                disable=not bars_shown(), dynamic_ncols=True)


class _OwnWarnings(logging.Filter):
    """On the terminal: the project's own warnings, nothing from libraries."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and (record.name == OWN or record.name.startswith(OWN + "."))


class _Scrubbed(logging.Formatter):
    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__(LOG_FORMAT)
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record))


def _terminal_handlers(logger: logging.Logger, streams: tuple[Any, ...] | None = None) -> list[logging.Handler]:
    """The logger's handlers that print to a stream (``streams``: to one of these), not to a file."""
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and (streams is None or any(h.stream is s for s in streams))]


@contextmanager
def _library_loggers_propagate() -> Iterator[None]:
    """Libraries with their own terminal handler (transformers, datasets) log through the root for the block."""
    changed: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or logger.name.startswith(OWN):
            continue
        own = _terminal_handlers(logger)  # type: ignore[arg-type]
        if own:
            changed.append((logger, own, logger.propagate))
            for h in own:
                logger.removeHandler(h)
            logger.propagate = True
    try:
        yield
    finally:
        for logger, handlers, propagate in changed:
            for h in handlers:
                logger.addHandler(h)
            logger.propagate = propagate


@contextmanager
def quiet(log_file: Path, scrub: Callable[[str], str] = lambda s: s) -> Iterator[None]:
    """For the block: library output (stdout, stderr, logging, warnings) appended to ``log_file`` (through
    ``scrub``, which takes secrets out); the project's own lines (:func:`say`, :func:`progress`) and warnings
    on the terminal. Restores everything after."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(log_file, "a", encoding="utf-8", buffering=1) as log:
        out, err = sys.stdout, sys.stderr
        file_handler = logging.StreamHandler(log)
        file_handler.setFormatter(_Scrubbed(scrub))
        own_filter = _OwnWarnings()
        shown = _terminal_handlers(root, (out, err, sys.__stdout__, sys.__stderr__))  # not pytest's caplog
        # no handler at all (a command without logging set up): Python's last resort would print the project's
        # warnings to stderr, which the block sends to the log; this one keeps them on the terminal
        added = None if root.handlers else logging.StreamHandler(getattr(err, "terminal", err))
        for h in shown:
            h.addFilter(own_filter)
        if added is not None:
            added.addFilter(own_filter)
            root.addHandler(added)
        root.addHandler(file_handler)
        level, capturing = root.level, getattr(logging, "_warnings_showwarning", None) is not None
        root.setLevel(min(level, logging.INFO))
        logging.captureWarnings(True)  # library warnings become py.warnings records: the log file, not the terminal
        sys.stdout = _Routed(log, getattr(out, "terminal", out), scrub)
        sys.stderr = _Routed(log, getattr(err, "terminal", err), scrub)
        try:
            with _library_loggers_propagate():
                yield
        finally:
            sys.stdout, sys.stderr = out, err
            if not capturing:
                logging.captureWarnings(False)
            root.setLevel(level)
            root.removeHandler(file_handler)
            if added is not None:
                root.removeHandler(added)
            for h in shown:
                h.removeFilter(own_filter)
