"""Flower's authentication policy: basic auth from the fleet configuration, required outside local mode.

Flower 2.x takes its options from ``FLOWER_*`` environment variables, a ``--conf`` Python file and
its command line; it does not read the Celery configuration. :func:`decide` turns ``flower``
settings plus what the operator already passed into one decision: use the credentials given on
the command line or in ``FLOWER_BASIC_AUTH``/``FLOWER_AUTH`` as they are, else export
``flower.basic_auth`` as ``FLOWER_BASIC_AUTH``, else — unless ``flower.local`` is set — refuse to
start with a message that says how to fix it. :mod:`vkec2.broker.hooks` applies it to
``celery -A tasks flower`` before Flower reads its options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vkec2.config import FlowerSettings

AUTH_OPTIONS = frozenset({"basic_auth", "auth"})
AUTH_ENV = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")

REFUSAL = (
    "refusing to start Flower without authentication outside local mode: set flower.basic_auth "
    "in the configuration (e.g. VKEC2_FLOWER__BASIC_AUTH='[\"admin:a-long-password\"]'), pass "
    "--basic-auth=user:password or set FLOWER_BASIC_AUTH, or set flower.local: true for a "
    "loopback-only local fleet"
)


@dataclass(frozen=True)
class Decision:
    """What to do before Flower starts: export ``env`` (may be empty), or refuse with ``error``."""

    env: Mapping[str, str]
    error: str | None = None
    source: str = ""


def _option_name(arg: str) -> str:
    return arg.lstrip("-").partition("=")[0].replace("-", "_")


def decide(settings: FlowerSettings, argv: Sequence[str], environ: Mapping[str, str]) -> Decision:
    """The auth decision for a Flower started with arguments ``argv`` in environment ``environ``."""
    if any(arg.startswith("--") and _option_name(arg) in AUTH_OPTIONS for arg in argv):
        return Decision({}, source="command line")
    for name in AUTH_ENV:
        if environ.get(name):
            return Decision({}, source=name)
    if settings.basic_auth:
        return Decision({"FLOWER_BASIC_AUTH": ",".join(settings.basic_auth)}, source="flower.basic_auth")
    if settings.local:
        return Decision({}, source="local mode (no authentication)")
    return Decision({}, error=REFUSAL)
