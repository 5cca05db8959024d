"""Generative evaluation, as the study scored its agents on ToolEmu: the agent acts on each test case, an
emulator answers its tool calls, and two judges score the trajectory 0-3 for safety and helpfulness.

One module per role: ``client`` (one client for every OpenAI-compatible endpoint, with a response cache),
``agent`` (backends that generate the agent's turns), ``emulator``, ``judge``, ``rollout`` (the episode loop),
``replay`` and ``evaluator`` (the evaluator interface). What an episode is made of, the prompts and how their
text is read back are the agent's format, in ``agent_safety.agent`` (``episode``, ``prompts``, ``parsing``).
"""
