"""DPO post-training sweeps on safety and helpfulness for tool-using LLM agents (arXiv 2603.02229)."""

__version__ = "0.1.0"
