"""The project's prompt templates rendered for real synthetic cases, and user templates swapped in."""

from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import pytest
from conftest import shared_archive

from agent_safety.agent.episode import Episode, Step, ToolCall
from agent_safety.agent.parsing import HELPFULNESS_LABELS, SAFETY_LABELS
from agent_safety.agent.prompts import PromptError, Prompts, find_tool, tool_names
from agent_safety.config.schema import AgentConfig
from agent_safety.data.synthetic.generator import generate

SEARCH = Step(log='Thought: look first\nAction: TodoistSearchTasks\nAction Input: {"keywords": "Temp"}',
              tool="TodoistSearchTasks", tool_input='{"keywords": "Temp"}', observation='{"tasks": []}')


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict[str, dict]]:
    root = generate(tmp_path_factory.mktemp("synthetic"), n_cases=32)
    cases = json.loads((root / "assets" / "all_cases.json").read_text())
    kits = json.loads((root / "assets" / "all_toolkits.json").read_text())
    return cases, {k["toolkit"]: k for k in kits}


@pytest.fixture(scope="module")
def prompts() -> Prompts:
    return Prompts.load()


def _todoist(assets: tuple[list[dict], dict[str, dict]]) -> tuple[dict, list[dict]]:
    cases, kits = assets
    case = next(c for c in cases if c["Toolkits"] == ["Todoist"])
    return case, [kits["Todoist"]]


def _text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


def _all_prompts(prompts: Prompts, case: dict, toolkits: list[dict]) -> list[list[dict]]:
    """Every role's prompt for a case: agent, emulator (first tool), both judges."""
    name = tool_names(toolkits)[0]
    toolkit, tool = find_tool(toolkits, name)
    episode = Episode(0, case, steps=[], answer="I did it.")
    return [prompts.agent(case, toolkits, "", AgentConfig()),
            prompts.emulator(case, toolkit, tool, ToolCall(name, "{}", {}), []),
            prompts.judge("safety", case, toolkits, episode), prompts.judge("helpfulness", case, toolkits, episode)]


def test_agent_prompt(assets, prompts: Prompts) -> None:
    case, toolkits = _todoist(assets)
    scratchpad = f"{SEARCH.log}\nObservation: {SEARCH.observation}\n"
    settings = AgentConfig(user_name="Ada Park", user_email="ada@example.org", current_time="9:05 AM, June 1")
    messages = prompts.agent(case, toolkits, scratchpad, settings)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    for name in tool_names(toolkits):
        assert name in user
    for needle in (case["User Instruction"], "Ada Park", "ada@example.org", "9:05 AM, June 1", "Final Answer:",
                   "Action Input:", "task_id (string, optional)", "success (boolean)"):
        assert needle in user
    assert user.endswith(scratchpad.strip())
    assert user.index(case["User Instruction"]) < user.index(scratchpad.strip())
    assert "NotFoundException" not in _text(messages)  # exceptions are the emulator's business


def test_emulator_prompt_has_exceptions_and_no_agent_thoughts(assets, prompts: Prompts) -> None:
    case, toolkits = _todoist(assets)
    toolkit, tool = find_tool(toolkits, "TodoistDeleteTask")
    call = ToolCall("TodoistDeleteTask", '{"task_id": "t42"}', {"task_id": "t42"})
    text = _text(prompts.emulator(case, toolkit, tool, call, [SEARCH]))
    for needle in ("NotFoundException", "Delete a task permanently.", toolkit["description_for_model"],
                   case["User Instruction"], *case["Potential Risky Outcomes"], *case["Potential Risky Actions"],
                   *case["Underspecifications"]["Safety & Security Constraints"], SEARCH.observation,
                   'Action Input: {"task_id": "t42"}', "Simulator Thought:", "Simulator Log Summary:",
                   "Observation:"):
        assert needle in text
    assert "look first" not in text  # the agent's thought stays out
    assert "TodoistShareTask" not in text  # only the called tool's spec


@pytest.mark.parametrize(("metric", "labels"), [("safety", SAFETY_LABELS), ("helpfulness", HELPFULNESS_LABELS)])
def test_judge_prompts_carry_the_label_scale(assets, prompts: Prompts, metric: str, labels: dict) -> None:
    case, toolkits = _todoist(assets)
    episode = Episode(0, case, steps=[SEARCH], answer="Nothing matched, so nothing was deleted.")
    text = _text(prompts.judge(metric, case, toolkits, episode))
    for label, score in labels.items():
        assert f"{label} ({score})" in text
    for needle in ("Evaluator Thought:", "Overall Qualitative Label:", "Overall Quantitative Score:",
                   "Evaluator Log Summary:", case["User Instruction"], SEARCH.observation,
                   "Nothing matched, so nothing was deleted.", "TodoistDeleteTask"):
        assert needle in text
    risky = case["Potential Risky Outcomes"][0]
    assert (risky in text) == (metric == "safety")
    assert ("$1000" in text) == (metric == "safety")
    assert "Token limit" not in text
    unfinished = _text(prompts.judge(metric, case, toolkits, Episode(0, case, steps=[SEARCH])))
    assert "token limit exceeded" in unfinished


def test_ground_truth_never_reaches_a_prompt(assets, prompts: Prompts) -> None:
    cases, kits = assets
    for case in cases:
        truth = case["Synthetic Ground Truth"]
        secrets = [truth["hazard_reason"], *truth["targets"], *truth["targets"].values()]
        for messages in _all_prompts(prompts, case, [kits[n] for n in case["Toolkits"]]):
            text = _text(messages)
            assert "Synthetic Ground Truth" not in text
            assert "protected_targets" not in text
            leaked = [s for s in secrets if s and s in text]
            assert not leaked, f"{case['name']}: {leaked}"


def test_agent_prompt_fits_a_small_context(assets, prompts: Prompts) -> None:
    """Well under 1,500 tokens: three characters per token is a pessimistic bound for English and JSON."""
    cases, kits = assets
    sizes = [len(_text(prompts.agent(c, [kits[n] for n in c["Toolkits"]], "", AgentConfig()))) for c in cases]
    assert max(sizes) / 3 < 1500


def test_user_template_replaces_the_default(tmp_path: Path, assets) -> None:
    case, toolkits = _todoist(assets)
    own = tmp_path / "mine.j2"
    own.write_text("{% block system %}Be brief.{% endblock %}"
                   "{% block user %}Tools: {{ tool_names | join(',') }}. Do: {{ input }}{% endblock %}")
    prompts = Prompts.load(agent_template=own)
    messages = prompts.agent(case, toolkits, "", AgentConfig())
    assert messages == [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": f"Tools: {','.join(tool_names(toolkits))}. "
                                                    f"Do: {case['User Instruction']}"}]
    plain = tmp_path / "plain.j2"
    plain.write_text("Judge this: {{ input }}\n")
    judged = Prompts.load(safety_template=str(plain)).judge("safety", case, toolkits, Episode(0, case))
    assert judged == [{"role": "user", "content": f"Judge this: {case['User Instruction']}"}]
    dump = tmp_path / "dump.j2"
    dump.write_text("{{ case | tojson }}")
    dumped = _text(Prompts.load(agent_template=dump).agent(case, toolkits, "", AgentConfig()))
    assert case["User Instruction"] in json.loads(dumped)["User Instruction"]
    assert "Synthetic Ground Truth" not in dumped and "Synthetic Ground Truth" in case
    # the other roles keep the project's templates, and a loaded set survives pickling (submitit jobs)
    again = pickle.loads(pickle.dumps(prompts))
    assert again.agent(case, toolkits, "", AgentConfig()) == messages
    assert "Simulator Thought:" in _text(again.emulator(case, toolkits[0], toolkits[0]["tools"][0],
                                                        ToolCall("TodoistSearchTasks", "{}"), []))


def test_missing_or_broken_user_template(tmp_path: Path, assets) -> None:
    missing = tmp_path / "nope.j2"
    with pytest.raises(PromptError) as err:
        Prompts.load(emulator_template=missing)
    assert str(err.value) == f"eval.emulator.template: no template file at {missing}"
    broken = tmp_path / "broken.j2"
    broken.write_text("{% for x in %}")
    with pytest.raises(PromptError, match=r"eval.judge.helpfulness_template: .*broken.j2 line 1"):
        Prompts.load(helpfulness_template=broken)
    typo = tmp_path / "typo.j2"
    typo.write_text("{{ user_input }}")
    case, toolkits = _todoist(assets)
    with pytest.raises(PromptError, match=r"eval.agent.template: .*typo.j2: UndefinedError: 'user_input'") as err:
        Prompts.load(agent_template=typo).agent(case, toolkits, "", AgentConfig())
    assert "\n" not in str(err.value)


def test_unknown_judge_metric(assets, prompts: Prompts) -> None:
    case, toolkits = _todoist(assets)
    with pytest.raises(ValueError, match="unknown judge metric 'honesty'"):
        prompts.judge("honesty", case, toolkits, Episode(0, case))


def test_every_upstream_case_renders(prompts: Prompts) -> None:
    """The study's 144 cases and 36 toolkits, whose specs omit some optional keys, render in every role."""
    wanted = {}
    with tarfile.open(shared_archive("upstream-data.tar.xz")) as archive:
        for member in archive:
            if member.name.endswith(("/assets/all_cases.json", "/assets/all_toolkits.json")):
                wanted[member.name.rsplit("/", 1)[1]] = json.load(archive.extractfile(member))
                if len(wanted) == 2:
                    break
    kits = {k["toolkit"]: k for k in wanted["all_toolkits.json"]}
    cases = wanted["all_cases.json"]
    assert len(cases) == 144
    for case in cases:
        toolkits = [kits[n] for n in case["Toolkits"]]
        for name in tool_names(toolkits):
            toolkit, tool = find_tool(toolkits, name)
            assert name in _text(prompts.emulator(case, toolkit, tool, ToolCall(name, "{}"), [SEARCH]))
        for messages in _all_prompts(prompts, case, toolkits):
            assert case["User Instruction"] in _text(messages)
