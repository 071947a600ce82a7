"""The ``vkec2`` command line: one entry point that dispatches to each component's own command.

``vkec2 agent`` and ``vkec2 agent-sim`` hand over to the agent package (which also runs on its own
as ``python -m agent``); ``vkec2 config check`` validates a configuration file. Each subcommand
module owns its arguments, so this file stays a thin router.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

Command = Callable[[list[str]], int]


def _agent(argv: list[str]) -> int:
    from agent.server import main

    return main(argv)


def _agent_sim(argv: list[str]) -> int:
    from agent.simulator import main

    return main(argv)


def _config(argv: list[str]) -> int:
    from vkec2.cli.config import main

    return main(argv)


def _producer(argv: list[str]) -> int:
    from producer.main import main

    return main(argv)


def _fleet(name: str) -> Command:
    def run(argv: list[str]) -> int:
        from vkec2.cli.fleet import main

        return main(name, argv)

    return run


def _up(argv: list[str]) -> int:
    from vkec2.cli.localfleet import main

    return main(argv)


COMMANDS: dict[str, tuple[Command, str]] = {
    "up": (_up, "run a local fleet on loopback with the example pods (the demo)"),
    "agent": (_agent, "run the agent on an instance (gRPC server)"),
    "agent-sim": (_agent_sim, "run many simulated agents in one process (local runs and tests)"),
    "producer": (_producer, "run the virtual node (Kubernetes, or --manifests DIR standalone)"),
    "status": (_fleet("status"), "fleet summary: nodes, pods by phase, EC2 calls"),
    "pods": (_fleet("pods"), "pods with phase, instance, health and age"),
    "instances": (_fleet("instances"), "the cluster's EC2 instances with tags and state"),
    "gc": (_fleet("gc"), "orphan GC: --dry-run reports, otherwise run one pass now"),
    "replay": (_fleet("replay"), "republish a pod task by name, as 'celery call' would"),
    "config": (_config, "configuration tools: 'vkec2 config check FILE'"),
}


def _usage() -> str:
    lines = ["usage: vkec2 COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"vkec2: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return COMMANDS[name][0](rest)


if __name__ == "__main__":
    sys.exit(main())
