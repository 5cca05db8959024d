"""``agent-safety``: the project's commands besides ``launch.py``.

``data``, ``aggregate``, ``judges``, ``import-published``, ``evaluate``, ``retry``, ``migrate`` and ``export``:
each subcommand lives in the module of its concern and adds itself through ``register(subparsers)``; the
modules are imported only when the command line is parsed, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that register subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = ("agent_safety.run.data_cli", "agent_safety.aggregate.cli", "agent_safety.aggregate.judges_cli",
                   "agent_safety.records.published",
                   "agent_safety.run.evaluate_cli", "agent_safety.launch.retry", "agent_safety.records.migrate",
                   "agent_safety.train.export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-safety", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (FileNotFoundError, ValueError, ConnectionError) as e:  # ConnectionError: an endpoint's one line
        print(f"agent-safety {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `agent-safety data stats | head`: the reader left, which is fine
        sys.stderr.close()
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
