"""``vkec2 config check FILE``: validate a configuration file the way every component will load it.

The command runs :func:`vkec2.config.load_config` on the file plus the ``VKEC2_*`` environment
(unless ``--no-env``) and prints the effective configuration (YAML, or JSON with ``-o json``) on
stdout with any warnings on stderr, exiting 0; or prints every error, each naming its key path and
its file or environment variable, on stderr and exits 1. Usage errors exit 2. The ``config`` click
group defined here is a subcommand of the ``vkec2`` group (``vkec2/cli/main.py``); the command is
meant for CI checks of a config change before it reaches the fleet.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click
import yaml

from vkec2.cli.common import Failed, Group
from vkec2.config import InvalidConfig, load_config
from vkec2.config.redaction import redact_config
from vkec2.errors import ConfigError


def render(data: dict[str, Any], output: str) -> str:
    """The effective configuration as text, with its secrets masked (passwords, tokens, keys)."""
    data = redact_config(data)
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@click.group("config", cls=Group)
def config() -> None:
    """configuration tools: 'vkec2 config check FILE'"""


@config.command("check", short_help="validate FILE and print the effective configuration")
@click.argument("file", metavar="FILE")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="output format",
)
@click.option("--no-env", is_flag=True, help="ignore VKEC2_* environment overrides")
def check(file: str, output: str, no_env: bool) -> None:
    """Validate a vkec2 configuration file (YAML, JSON, or the original provider's config.json)
    together with VKEC2_* environment overrides."""
    # Warnings are printed below; keep logging's last-resort handler from printing them twice.
    logging.getLogger("vkec2.config").addHandler(logging.NullHandler())
    env = {} if no_env else dict(os.environ)
    env.pop("VKEC2_CONFIG", None)  # FILE is the file being checked
    try:
        loaded = load_config(file, env=env)
    except InvalidConfig as exc:
        count = len(exc.errors)
        lines = [f"error: {line}" for line in exc.errors]
        raise Failed("\n".join([*lines, f"{file}: {count} error{'s' if count != 1 else ''}"])) from exc
    except ConfigError as exc:
        raise Failed(f"error: {exc.message}") from exc
    sys.stdout.write(render(loaded.settings.model_dump(mode="json"), output))
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
