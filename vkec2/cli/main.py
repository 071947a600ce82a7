"""The ``vkec2`` command: one click group whose subcommands are defined in the modules they belong to.

The operator commands (``status``, ``pods``, ``instances``, ``gc``, ``replay``) live in
``vkec2/cli/fleet.py``, ``config check`` in ``vkec2/cli/config.py`` and ``up`` in
``vkec2/cli/localfleet.py``; the group imports a module only when its command runs (or help or
completion lists it), so ``vkec2 agent-sim`` does not pay for Celery and boto3. ``agent``,
``agent-sim`` and ``producer`` are separate programs with their own argparse parsers: the group
hands them the rest of the command line untouched, their ``--help`` included. Exit status: 0
success, 1 the operation failed, 2 a usage error. ``vkec2 --version`` prints the installed
distribution's version; click's shell completion is enabled through ``_VKEC2_COMPLETE``.
``vkec2 hosts`` (the Dedicated hosts) lives in ``vkec2/cli/hosts.py``, ``vkec2 bench`` (the load
generator) in ``vkec2/cli/bench.py``. ``worker``, ``beat`` and
``flower`` hand the rest of the command line to Celery (``vkec2/cli/roles.py``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from vkec2.cli import roles
from vkec2.cli.common import Group, exit_with

#: Subcommands defined in other modules, as ``module:attribute``, in the order help lists them.
LAZY_COMMANDS: dict[str, str] = {
    "up": "vkec2.cli.localfleet:up",
    "status": "vkec2.cli.fleet:status",
    "pods": "vkec2.cli.fleet:pods",
    "instances": "vkec2.cli.fleet:instances",
    "hosts": "vkec2.cli.hosts:hosts",
    "gc": "vkec2.cli.fleet:gc",
    "replay": "vkec2.cli.fleet:replay",
    "node": "vkec2.cli.node:node",
    "config": "vkec2.cli.config:config",
    "migrate": "vkec2.cli.migrate:migrate",
    "infra": "vkec2.cli.infra:infra",
    "bench": "vkec2.cli.bench:bench",
}


class LazyGroup(Group):
    """A group that imports the module of a subcommand named in :data:`LAZY_COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*LAZY_COMMANDS, *self.commands]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vkec2", prog_name="vkec2")
def cli() -> None:
    """Run Kubernetes pods on Amazon EC2 instances, one pod per instance: the fleet's command line."""


# The forwarded programs parse everything after their name themselves, --help included.
_FORWARD: dict[str, Any] = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@cli.command("agent", context_settings=_FORWARD, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """run the agent on an instance (gRPC server)"""
    from agent.cli import main as run

    exit_with(run(list(args)))


@cli.command("agent-sim", context_settings=_FORWARD, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent_sim(args: tuple[str, ...]) -> None:
    """run many simulated agents in one process (local runs and tests)"""
    from agent.sim.simulator import main as run

    exit_with(run(list(args)))


@cli.command("producer", context_settings=_FORWARD, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def producer(args: tuple[str, ...]) -> None:
    """run the virtual node (Kubernetes, or --manifests DIR standalone)"""
    from producer.main import main as run

    exit_with(run(args))


for _role in roles.COMMANDS:  # worker, beat, flower: the fleet image's roles (vkec2/cli/roles.py)
    cli.add_command(_role)

#: The names of every ``vkec2`` subcommand.
COMMANDS: tuple[str, ...] = (*LAZY_COMMANDS, *cli.commands)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``vkec2`` console script (and ``python -m vkec2.cli``); returns the exit status."""
    try:
        cli.main(args=None if argv is None else list(argv), prog_name="vkec2")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
