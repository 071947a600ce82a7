"""``vkec2 migrate``: explain, key by key, what the original provider's ``config.json`` becomes.

The command reads a legacy file (default ``/etc/config/config.json``, the original's own default),
maps it through :func:`vkec2.config.legacy.from_legacy` and prints one line per key on stdout:
``Legacy.Key -> new.path = value`` for a mapped key, ``Legacy.Key -> ignored: why`` for one with
no meaning here. With ``--output FILE`` it writes the equivalent new-style YAML (only the keys the
file set, so vkec2's defaults apply to the rest; the ignored keys listed in a comment), after
checking that it validates; mTLS settings (``agent.tls``), which the original had no notion of, are
named as the remaining step on stderr. Errors (a key no release had, a bad value) exit 1 with every
line naming the legacy key. See docs/migrating.md.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml
from pydantic import ValidationError

from vkec2.cli.common import Failed
from vkec2.config.errors import Collector, InvalidConfig, describe
from vkec2.config.legacy import LEGACY_TOP_LEVEL, Step, from_legacy, is_legacy
from vkec2.config.loading import read_file
from vkec2.config.model import Settings
from vkec2.config.transport import plaintext_agents_problem

#: Where the original provider read its configuration when given no path.
ORIGINAL_DEFAULT = "/etc/config/config.json"
#: Values longer than this are shortened in the printed mapping (base64 ``InitData``).
SHOWN_CHARS = 48


def shown(value: Any) -> str:
    """``value`` as JSON, shortened past :data:`SHOWN_CHARS`."""
    text = json.dumps(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}... ({len(text)} chars)"


def line(step: Step) -> str:
    """One printed line of the mapping."""
    if step.target is None:
        return f"{step.label} -> ignored: {step.note}"
    value = f" = {shown(step.value)}" if step.value is not None else ""
    note = f"  ({step.note})" if step.note else ""
    return f"{step.label} -> {step.target}{value}{note}"


def new_yaml(source: str, data: dict[str, Any], steps: list[Step]) -> str:
    """The new-style file: a comment naming the source and the ignored keys, then ``data``."""
    head = [f"# vkec2 configuration migrated by 'vkec2 migrate' from {source}"]
    ignored = [step for step in steps if step.target is None and step.value not in (None, "")]
    if ignored:
        head.append("# keys of the original with no meaning in vkec2 (see docs/migrating.md):")
        head.extend(f"#   {step.label}: {step.note}" for step in ignored)
    return "\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@click.command("migrate", short_help="map the original provider's config.json onto vkec2's settings")
@click.option(
    "--config",
    "path",
    default=ORIGINAL_DEFAULT,
    show_default=True,
    metavar="FILE",
    help="the original provider's config.json",
)
@click.option("--output", metavar="FILE", help="write the equivalent vkec2 YAML here")
def migrate(path: str, output: str | None) -> None:
    """Print what each key of the original provider's config.json becomes in vkec2 (new setting and
    value, or why it is ignored), and with --output write the equivalent vkec2 YAML."""
    try:
        raw = read_file(path)
    except InvalidConfig as exc:
        raise Failed("\n".join(f"error: {error}" for error in exc.errors)) from exc
    if not is_legacy(raw):
        raise Failed(
            f"error: {path}: not the original provider's config.json (none of its top-level keys: "
            f"{', '.join(LEGACY_TOP_LEVEL)}); check a vkec2 file with 'vkec2 config check'"
        )
    out = Collector()
    steps: list[Step] = []
    data = from_legacy(raw, path, out, steps)
    for step in steps:
        print(line(step))
    errors = list(out.errors)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors.extend(describe(exc, path, out.origins))
    if errors:
        count = len(errors)
        lines = [f"error: {error}" for error in errors]
        raise Failed("\n".join([*lines, f"{path}: {count} error{'s' if count != 1 else ''}"]))
    assert settings is not None
    if output is not None:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(new_yaml(path, data, steps))
        print(f"wrote {output}", file=sys.stderr)
    if plaintext_agents_problem(settings.agent) is not None:
        print(
            "next: add agent.tls (the fleet CA) and agent.identity to the new file or as VKEC2_AGENT__* "
            "before starting vkec2: the original spoke plaintext gRPC, vkec2 drives agents over mTLS",
            file=sys.stderr,
        )
