"""``vkec2 config check FILE``: validate a configuration file the way every component will load it.

The command runs :func:`vkec2.config.load_config` on the file plus the ``VKEC2_*`` environment
(unless ``--no-env``) and prints the effective configuration (YAML, or JSON with ``-o json``) on
stdout with any warnings on stderr, exiting 0; or prints every error, each naming its key path and
its file or environment variable, on stderr and exits 1. Usage errors exit 2. It is routed here from
``vkec2/cli/main.py`` and is meant for CI checks of a config change before it reaches the fleet.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from vkec2.config import InvalidConfig, load_config
from vkec2.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vkec2 config", description="configuration tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="validate FILE and print the effective configuration",
        description="Validate a vkec2 configuration file (YAML, JSON, or the original provider's "
        "config.json) together with VKEC2_* environment overrides.",
    )
    check.add_argument("file", metavar="FILE", help="configuration file to check")
    check.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")
    check.add_argument("--no-env", action="store_true", help="ignore VKEC2_* environment overrides")
    return parser


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def render(data: dict[str, Any], output: str) -> str:
    """The effective configuration as text, with the Redis password masked."""
    if isinstance(data.get("redis_url"), str):
        data = {**data, "redis_url": _redact_url(data["redis_url"])}
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def main(argv: list[str]) -> int:
    """Entry point of ``vkec2 config``; returns the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, usage errors exit 2
        return exc.code if isinstance(exc.code, int) else 2
    # Warnings are printed below; keep logging's last-resort handler from printing them twice.
    logging.getLogger("vkec2.config").addHandler(logging.NullHandler())
    env = {} if args.no_env else dict(os.environ)
    env.pop("VKEC2_CONFIG", None)  # FILE is the file being checked
    try:
        loaded = load_config(args.file, env=env)
    except InvalidConfig as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        count = len(exc.errors)
        print(f"{args.file}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    sys.stdout.write(render(loaded.settings.model_dump(mode="json"), args.output))
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
