"""``console.quiet``: during a run, library output goes to the run's log and the run's own lines to the terminal."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from pathlib import Path

from agent_safety.console import quiet, say, terminal


def test_library_output_goes_to_the_log_and_the_projects_lines_and_warnings_to_the_terminal(tmp_path: Path,
                                                                                            monkeypatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    library = logging.getLogger("some_library")
    own_handler = logging.StreamHandler(err)  # a library's own terminal handler, as transformers installs
    library.addHandler(own_handler)
    library.propagate = False
    console = logging.StreamHandler(err)  # the terminal handler Hydra puts on the root logger
    logging.getLogger().addHandler(console)
    log_file = tmp_path / "run.log"
    try:
        with quiet(log_file, scrub=lambda s: s.replace("sk-secret", "***")):
            say("[run] stage 0 (base): safety 2.5")
            print("a library's print with sk-secret")
            print("a library's stderr line", file=sys.stderr)
            warnings.warn("a library's FutureWarning", FutureWarning, stacklevel=1)
            library.warning("a library's reminder")
            logging.getLogger("agent_safety.config").warning("data.root: no such folder")
            logging.getLogger("agent_safety.train").info("stage 1: first training step")
            assert terminal() is out
        print("after the run")
    finally:
        library.removeHandler(own_handler)
        logging.getLogger().removeHandler(console)
    log = log_file.read_text()
    assert out.getvalue() == "[run] stage 0 (base): safety 2.5\nafter the run\n"
    assert err.getvalue().strip().splitlines() == ["data.root: no such folder"]  # the project's warning only
    for line in ("a library's print with ***", "a library's stderr line", "FutureWarning: a library's FutureWarning",
                 "a library's reminder", "stage 1: first training step", "data.root: no such folder"):
        assert line in log
    assert "sk-secret" not in log
    assert sys.stdout is out and sys.stderr is err and not library.propagate and console.filters == []


def test_a_stage_line_names_what_the_agent_did_and_its_unparsed_turns() -> None:
    from agent_safety.run.schedule import stage_summary

    base = {"stage": 0, "safety": 2.0, "helpfulness": 1.0, "behaviours": {"ask": 3, "fail": 1},
            "agent_turns": 12, "unparsed_turns": 0}
    rec = {"stage": 1, "objectives": ["helpfulness"], "safety": 1.5, "helpfulness": 1.75,
           "behaviours": {"ask": 1, "fail": 3}, "agent_turns": 20, "unparsed_turns": 4}
    assert stage_summary("abc", base).splitlines() == ["[abc] stage 0 (base): safety 2.000  helpfulness 1.000",
                                                        "      ask 3, fail 1"]
    assert stage_summary("abc", rec, base).splitlines() == [
        "[abc] stage 1 (helpfulness): safety 1.500  helpfulness 1.750  (-0.500 / +0.750 from the base)",
        "      ask 1, fail 3; 4 of 20 turns unparsed"]
