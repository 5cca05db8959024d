"""One way to compose run configs outside ``launch.py``: the commands, retry, plan mode and the tests.

Each composes ``conf/config.yaml`` with the same schema and sweep presets as ``launch.py`` does, so what
they check or relaunch is exactly what a job would run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: The project's root: ``conf/``, ``sweep/`` and ``launch.py`` sit here, next to the package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    path = PROJECT_ROOT / "conf"
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path}: the project's conf/ folder is not next to the agent_safety package")
    return path


def override_key(override: str) -> str:
    """The key an override sets: ``data`` for ``data=x``, ``+sweep=y`` and ``~data``."""
    return override.partition("=")[0].lstrip("+~")


def with_default(overrides: Sequence[str], key: str, default: str) -> list[str]:
    """``default`` first unless an override already sets ``key`` (``data=...``), so the user's choice wins."""
    return list(overrides) if any(override_key(o) == key for o in overrides) else [default, *overrides]


def on_top(overrides: Sequence[str], more: Sequence[str]) -> list[str]:
    """``overrides`` then ``more``, less the overrides of keys ``more`` sets again (Hydra refuses a key twice)."""
    keys = {override_key(o) for o in more}
    return [o for o in overrides if override_key(o) not in keys] + list(more)


def compose_many(jobs: Sequence[Sequence[str]], common: Sequence[str] = (),
                 hydra: bool = False) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(overrides, composed config) of each job, as the launcher's job would compose it (with Hydra's own
    node when ``hydra``). One Hydra initialisation serves every job."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from agent_safety.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            for overrides in jobs:
                yield tuple(overrides), hydra_compose(config_name="config", overrides=[*common, *overrides],
                                                      return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


def compose(overrides: Sequence[str] = ()) -> Any:
    """The run config ``launch.py`` would compose from these overrides."""
    ((_, cfg),) = compose_many([overrides])
    return cfg


def compose_config(overrides: Sequence[str]) -> Any:
    """:func:`compose` for a user's overrides: a bad one is a one-line ``ValueError`` naming them."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ValueError(f"bad overrides {' '.join(overrides)!r}: {str(e).splitlines()[0]}") from None
