"""Compose one DPO run from the config groups and run it: ``python launch.py schedule=S_H seed=1``.

Sweeps: ``python launch.py -m schedule=S,H,S_H,H_S,SH seed=0,1,2`` or ``python launch.py sweep=orders``;
add ``--dry-run`` (or ``plan=true``) to print the plan without running or submitting anything. A sweep the
cluster refuses (sbatch's error) ends in one line with the reason and the launcher keys to change.
"""

import sys

import hydra
from omegaconf import DictConfig

from agent_safety.config.schema import register_configs


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from agent_safety.launch.run import launch

    return launch(cfg)


def sweep_as_hydra_wants(args: list[str]) -> list[str]:
    """``sweep=NAME`` as ``+sweep=NAME``: a sweep preset is added to the config, which Hydra spells with a +."""
    return ["+" + a if a.startswith("sweep=") else a for a in args]


if __name__ == "__main__":
    register_configs()
    sys.argv[1:] = sweep_as_hydra_wants(sys.argv[1:])
    if "--dry-run" in sys.argv or any(a.lower() == "plan=true" for a in sys.argv[1:]):
        # plan in this process, through no launcher: nothing is submitted, whatever the launcher and preset
        from agent_safety.launch.plan import plan_sweep

        multirun = "-m" in sys.argv or "--multirun" in sys.argv
        args = [a for a in sys.argv[1:] if a not in ("--dry-run", "-m", "--multirun") and a.lower() != "plan=true"]
        from agent_safety.launch.run import ONE_LINE

        try:
            sys.exit(plan_sweep(args, multirun))
        except ONE_LINE as e:  # a bad value names its key, as a launch without --dry-run does
            print(f"launch.py: error: {e}", file=sys.stderr)
            sys.exit(2)
    from agent_safety.launch.cluster import run_reporting_submission_errors

    sys.exit(run_reporting_submission_errors(main))  # a sweep sbatch refuses: one line, not a traceback
