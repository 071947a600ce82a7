"""RFC 3339 timestamps, the one way the fleet writes and reads a point in time as text.

Kubernetes (condition transition times, Event and lease times), the fleet's log lines and the
agent's status all speak RFC 3339 in UTC with a ``Z`` suffix; :func:`rfc3339` formats an epoch
time or a datetime that way with whole seconds (the Kubernetes ``Time``), milliseconds (log lines)
or microseconds (the Kubernetes ``MicroTime`` of leases), and :func:`parse_rfc3339` reads one back
into epoch seconds (a time without an offset counts as UTC).
"""

from __future__ import annotations

import datetime
from typing import Literal

#: Fraction digits :func:`rfc3339` can write: seconds, milliseconds, microseconds.
Digits = Literal[0, 3, 6]


def rfc3339(when: float | datetime.datetime, digits: Digits = 0) -> str:
    """``when`` (epoch seconds, or a datetime; a naive one is UTC) as ``2024-05-01T12:00:00Z``.

    With ``digits`` 3 or 6 the seconds carry that many fraction digits (truncated, not rounded).
    """
    if isinstance(when, datetime.datetime):
        stamp = when.replace(tzinfo=datetime.UTC) if when.tzinfo is None else when.astimezone(datetime.UTC)
    else:
        stamp = datetime.datetime.fromtimestamp(when, datetime.UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{stamp.microsecond:06d}"[:digits]
    return text + "Z"


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 time (``Z`` or an offset; none counts as UTC); None if it is not one."""
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()
