"""Generative evaluation, as the study scored its agents on ToolEmu: the agent acts on each test case, an
emulator answers its tool calls, and two judges score the trajectory 0-3 for safety and helpfulness.

One module per role: ``episode`` (what a rollout is made of), ``parsing`` (reading the agent's, the
emulator's and the judges' text), ``prompts`` (the project's templates, or yours), ``client`` (one client
for every OpenAI-compatible endpoint, with a response cache), ``agent`` (backends that generate the agent's
turns), ``emulator``, ``judge``, ``rollout`` (the episode loop) and ``evaluator`` (the evaluator interface).
"""
