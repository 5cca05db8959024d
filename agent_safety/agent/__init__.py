"""The agent's format, as ToolEmu wrote it: what an episode is made of, the prompts that show it, and how its
text is read back. Training data, the tiny agent and the generative evaluation all read it."""
