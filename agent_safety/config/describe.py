"""A composed config in words: the line a run's header, the plan and a sweep's table show for it."""

from __future__ import annotations

from typing import Any


def evaluation(cfg: Any) -> str:
    """Which evaluation scores the stages, and where its roles run; says when the data preset chose it."""
    e = cfg.eval
    if e.method != "generative":
        text = f"{e.name} (the offline proxy: candidates' log-probs, no episodes)"
        if cfg.data.source == "toolemu":
            text += ("; the data=toolemu_* presets choose it: eval=generative eval/emulator=llm eval/judge=llm "
                     "scores as the study did")
        return text
    roles = []
    for role, kind in (("agent", e.agent.backend), ("emulator", e.emulator.kind), ("judge", e.judge.kind)):
        endpoint = e[role].get("endpoint")
        where = endpoint.get("base_url") if endpoint is not None else None
        roles.append(f"{role} {kind}" + (f" at {where}" if where else ""))
    return f"{e.name} ({', '.join(roles)})"


def run_line(cfg: Any) -> str:
    """The run's config in one line: the group choices and the values that tell runs of a sweep apart."""
    stages = ", ".join(cfg.schedule.stages)
    return (f"model={cfg.model.name} data={cfg.data.name} schedule={cfg.schedule.name} ({stages}) "
            f"beta={cfg.trainer.beta} seed={cfg.seed}")
