"""Compose one DPO run from the config groups and run it: ``python launch.py schedule=S_H seed=1``.

Sweeps: ``python launch.py -m schedule=S,H,S_H,H_S,SH seed=0,1,2`` or ``python launch.py +sweep=orders``;
add ``--dry-run`` (or ``plan=true``) to print the plan without running or submitting anything.
"""

import sys

import hydra
from omegaconf import DictConfig

from agent_safety.config import register_configs


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from agent_safety.launch import launch

    return launch(cfg)


if __name__ == "__main__":
    if "--dry-run" in sys.argv:  # plan in this process: never hand jobs to a cluster launcher
        sys.argv = [a for a in sys.argv if a != "--dry-run"] + ["plan=true", "hydra/launcher=local"]
    register_configs()
    main()
