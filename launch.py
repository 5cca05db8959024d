"""Compose one DPO run from the config groups and run it: ``python launch.py schedule=S_H seed=1``.

Multirun sweeps: ``python launch.py -m schedule=S,H,S_H,H_S,SH seed=0,1,2``.
"""

import hydra
from omegaconf import DictConfig

from agent_safety.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from agent_safety.launch import launch

    return launch(cfg)


if __name__ == "__main__":
    main()
