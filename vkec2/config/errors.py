"""How configuration problems are reported: :class:`InvalidConfig` and the lines it lists.

Every error line reads ``source: key.path: problem``, where the source is the file or
``env VKEC2_...`` and the key path is spelled as it was written there (a legacy file's
``WarmPoolConfig[0].DesiredCount``, a new file's ``warm_pools[0].desired_count``). While loading,
a :class:`Collector` gathers errors, warnings and the :class:`Origin` of each key that a legacy
file or a variable set; :func:`describe` turns a pydantic ``ValidationError`` into such lines by
finding the origin of the longest prefix of each error's location.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from vkec2.config.annotations import annotation_at, strip_optional
from vkec2.config.redaction import is_secret_key, redact
from vkec2.errors import ConfigError

#: A key path in the settings: mapping keys as strings, list indices as ints.
KeyPath = tuple[str | int, ...]


class InvalidConfig(ConfigError):
    """A :class:`ConfigError` that also keeps each error line (``source: key.path: problem``)."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Origin:
    """Where a key was set: the source (file name or ``env VKEC2_...``) and the key's spelling there."""

    source: str
    label: str


class Collector:
    """Errors, warnings and key origins gathered while one configuration is loaded."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.origins: dict[KeyPath, Origin] = {}


def render(path: Sequence[str | int]) -> str:
    """``warm_pools[0].name`` for ``("warm_pools", 0, "name")``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def kind(value: Any) -> str:
    """What a parsed value is, for messages: ``a mapping``, ``a list``, ``null``, ``a str ('x')``."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"a {type(value).__name__} ({value!r})"


def _show(value: Any) -> str:
    text = redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def describe(exc: ValidationError, source: str | None, origins: Mapping[KeyPath, Origin]) -> list[str]:
    """One line per validation error, named by the origin of its key (else ``source``)."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc: KeyPath = tuple(error["loc"])
        origin: Origin | None = None
        cut = 0
        for cut in range(len(loc), -1, -1):
            origin = origins.get(loc[:cut])
            if origin is not None:
                break
        if origin is None:
            where = f"{source or 'configuration'}: {render(loc) or '(top level)'}"
        else:
            rest = render(loc[cut:])
            sep = "" if not rest or rest.startswith("[") else "."
            where = f"{origin.source}: {origin.label}{sep}{rest}"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parent = strip_optional(annotation_at(loc[:-1]))
            if isinstance(parent, type) and issubclass(parent, BaseModel):
                message = f"unknown key (known: {', '.join(parent.model_fields)})"
            else:
                message = "unknown key"
        elif any(isinstance(part, str) and is_secret_key(part) for part in loc):
            message = redact(message)  # a secret's value is never shown
        elif error["type"] != "missing" and not isinstance(error["input"], dict | list):
            shown = _show(error["input"])
            if error["type"] != "value_error" or shown not in message:
                message += f" (got {shown})"
        lines.append(f"{where}: {message}")
    return lines
