"""What every ``vkec2`` subcommand shares: click classes for usage lines, and the failure exit status.

The ``vkec2`` group and each subcommand module build their click commands with :class:`Command`
and :class:`Group`, whose usage lines read ``usage: vkec2 ...`` like those of the programs the
group forwards to (the agent, the simulator and the producer parse their own arguments with
argparse). A command that fails raises :class:`Failed`: its message is printed on stderr, with
any credentials in it hidden, and the process exits 1; click's own usage errors exit 2, and
success exits 0.
"""

from __future__ import annotations

from typing import IO, Any

import click

from vkec2.config.redaction import redact


class Formatter(click.HelpFormatter):
    """click's help formatter with argparse's lower-case ``usage:`` prefix."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, "usage: " if prefix is None else prefix)


class Context(click.Context):
    """A click context that formats help and usage with :class:`Formatter`."""

    formatter_class = Formatter


class Command(click.Command):
    """A ``vkec2`` subcommand."""

    context_class = Context


class Group(click.Group):
    """A ``vkec2`` command group; commands and groups declared on it use the classes above."""

    context_class = Context
    command_class = Command
    group_class = type  # subgroups are of this same class


class Failed(click.ClickException):
    """The operation failed: the message (one line or several) goes to stderr as is; exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(redact(self.format_message()), file=file, err=True)


def exit_with(code: int) -> None:
    """End the current command with this exit status (0 success, 1 failed, 2 usage error)."""
    click.get_current_context().exit(code)
