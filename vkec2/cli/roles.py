"""``vkec2 worker``, ``vkec2 beat`` and ``vkec2 flower``: the fleet's Celery roles under the one entry point.

The fleet image's entry point is ``vkec2`` with the role as its argument (compose/Dockerfile), so
every role of the fleet is a ``vkec2`` subcommand: these three replace the current process with
``python -m celery -A tasks ROLE ARGS...`` (``exec``, so signals from the container runtime reach
Celery directly and its exit status is the container's). Everything after the role is Celery's,
``--help`` included; Celery already parses and documents these options, so nothing is re-declared.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

#: The Celery programs a fleet runs, by ``vkec2`` subcommand, with their one-line help.
ROLES: dict[str, str] = {
    "worker": "run a Celery worker of the fleet (celery -A tasks worker ...)",
    "beat": "run the fleet's periodic-task scheduler (celery -A tasks beat ...)",
    "flower": "run Flower, the fleet's Celery monitor (celery -A tasks flower ...)",
}

_FORWARD: dict[str, Any] = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def celery_argv(role: str, args: tuple[str, ...] | list[str]) -> list[str]:
    """The command line that runs ``role`` with ``args`` in this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "tasks", role, *args]


def _command(role: str, help_text: str) -> click.Command:
    @click.command(role, context_settings=_FORWARD, add_help_option=False, help=help_text)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def run(args: tuple[str, ...]) -> None:
        argv = celery_argv(role, args)
        sys.stdout.flush()
        os.execv(argv[0], argv)

    return run


#: The click commands, in the order ``vkec2 --help`` lists them.
COMMANDS: list[click.Command] = [_command(role, text) for role, text in ROLES.items()]
