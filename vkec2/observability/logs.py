"""Structured log lines for every component, with the pod and task a line belongs to bound as context.

:func:`setup` puts one handler on the root logger of a process (producer, worker, beat, agent
simulator) that writes ``key=value`` lines (``logging.format: kv``, the default) or one JSON object
a line (``json``). Context comes from a :class:`contextvars.ContextVar`: the task layer binds the
pod UID, namespace, name and task ID when a task starts (:func:`bind`) and restores the previous
context when it ends (:func:`reset`), so every line emitted while the task runs carries them, from
whichever module logs. At ``logging.verbosity: 2`` a line also names the thread, the task and the
agent endpoint. In ``kv`` lines the message comes last and unquoted (the rest of the line), so a
line stays readable and greppable; newlines are escaped so one record is one line. Every message
and traceback goes through :func:`vkec2.config.redaction.redact` first: no line shows a URL's
password, a token or a private key, whichever module logged it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import IO, Any

from vkec2.config import LoggingSettings
from vkec2.config.redaction import redact
from vkec2.domain.times import rfc3339

#: Keys bound for every task line, in the order they are written.
BASE_KEYS = ("uid", "namespace", "name", "task_id")
#: Keys added at verbosity 2 (``thread`` comes from the log record itself).
VERBOSE_KEYS = ("thread", "task", "endpoint")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("vkec2_log_context", default=_EMPTY)


def bind(**values: Any) -> Token[Mapping[str, str]]:
    """Add ``values`` (None and "" are skipped) to this thread's log context; returns a reset token."""
    merged = dict(_context.get())
    merged.update({k: str(v) for k, v in values.items() if v is not None and v != ""})
    return _context.set(merged)


def reset(token: Token[Mapping[str, str]]) -> None:
    """Restore the context as it was before the :func:`bind` that returned ``token``."""
    _context.reset(token)


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``with bound(uid=...):`` — the context holds ``values`` inside the block."""
    token = bind(**values)
    try:
        yield
    finally:
        reset(token)


def current() -> dict[str, str]:
    """The context bound in this thread right now."""
    return dict(_context.get())


def _fields(record: logging.LogRecord, verbosity: int) -> dict[str, str]:
    ctx = _context.get()
    out = {key: ctx[key] for key in BASE_KEYS if key in ctx}
    if verbosity >= 2:
        out["thread"] = record.threadName or ""
        out.update({key: ctx[key] for key in VERBOSE_KEYS[1:] if key in ctx})
    return out


def _timestamp(record: logging.LogRecord) -> str:
    return rfc3339(record.created, digits=3)


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\r\t\\'):
        return value
    return json.dumps(value, ensure_ascii=False)


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO logger=... component=worker uid=... task_id=... msg=the message``."""

    def __init__(self, component: str, verbosity: int = 1) -> None:
        super().__init__()
        self.component = component
        self.verbosity = verbosity

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record)}",
            f"level={record.levelname}",
            f"logger={_quote(record.name)}",
            f"component={_quote(self.component)}",
        ]
        parts += [f"{k}={_quote(v)}" for k, v in _fields(record, self.verbosity).items()]
        if record.exc_info:
            parts.append(f"exc={_quote(redact(self.formatException(record.exc_info)))}")
        parts.append(f"msg={_one_line(redact(record.getMessage()))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, component, the context keys, msg (and exc)."""

    def __init__(self, component: str, verbosity: int = 1) -> None:
        super().__init__()
        self.component = component
        self.verbosity = verbosity

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, str] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            **_fields(record, self.verbosity),
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`setup` installs (recognised so a second setup replaces it)."""


def formatter(settings: LoggingSettings, component: str) -> logging.Formatter:
    if settings.format == "json":
        return JsonFormatter(component, settings.verbosity)
    return KeyValueFormatter(component, settings.verbosity)


def setup(
    settings: LoggingSettings,
    component: str,
    level: int | str | None = None,
    stream: IO[str] | None = None,
    replace: bool = False,
) -> logging.Handler:
    """Route the root logger through one structured handler; ``settings.level`` wins over ``level``.

    Calling it again replaces the handler it installed before; ``replace`` also removes every
    other root handler (e.g. one a ``logging.basicConfig`` call put there before the settings
    were loaded).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if replace or isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(settings, component))
    root.addHandler(handler)
    chosen = settings.level or level or logging.INFO
    root.setLevel(chosen if isinstance(chosen, int) else logging.getLevelName(chosen.upper()))
    return handler
