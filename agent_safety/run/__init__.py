"""A run: its schedule of stages, the context its steps share, and the commands that run or score it."""
