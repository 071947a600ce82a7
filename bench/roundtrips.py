"""Counting Redis round trips in this process, by what was sent, for the step benchmarks.

:class:`RoundTrips` patches redis-py's connection class while it is active so that every packed
send (one command, or one pipeline) counts as one round trip, labelled with its command names
(``EVALSHA`` labelled with the name of the store's script it runs, from
:mod:`vkec2.store.scripts`). It sees every redis-py client of the process: the store's and kombu's
(the broker), so a step's Celery publish is counted too. Written for the benchmarks because
neither redis-py nor Redis counts round trips per caller (``INFO commandstats`` counts commands of
the whole server, pipelines unfolded). Not thread-aware: count while one step runs.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.connection import AbstractConnection

from vkec2.store import scripts


def _script_names() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in vars(scripts).items():
        if name.isupper() and isinstance(value, str) and "redis.call" in value:
            out[hashlib.sha1(value.encode()).hexdigest()] = name.lower()
    return out


def _label(args: tuple[Any, ...], names: dict[str, str]) -> str:
    command = str(args[0]).upper() if args else "?"
    if command == "EVALSHA" and len(args) > 1:
        name = names.get(str(args[1]), str(args[1])[:8])
        if name == "step_end" and len(args) > 16:  # its mode, and whether it writes (fields or events)
            base = 3 + int(args[2])  # ARGV[1] (after EVALSHA, sha, numkeys, KEYS)
            nfields = int(args[base + 7])
            nevents = int(args[base + 8 + 2 * nfields])
            return f"script:step_end:{args[base + 3]}" + ("+write" if nfields or nevents else "")
        return f"script:{name}"
    return command


class RoundTrips:
    """Round trips to Redis made by this process while :meth:`counting` is active."""

    def __init__(self) -> None:
        self.trips: Counter[str] = Counter()
        self._names = _script_names()
        self._pending = threading.local()

    def total(self) -> int:
        return sum(self.trips.values())

    @contextmanager
    def counting(self) -> Iterator[RoundTrips]:
        names, counter, pending = self._names, self.trips, self._pending
        cls: Any = AbstractConnection  # patched for the block, restored after
        orig_send, orig_packed, orig_pipe = cls.send_command, cls.send_packed_command, cls.pack_commands

        def send_command(conn: Any, *args: Any, **kwargs: Any) -> Any:
            pending.label = _label(args, names)
            return orig_send(conn, *args, **kwargs)

        def pack_commands(conn: Any, commands: Any) -> Any:
            labels = [_label(tuple(c), names) for c in commands]
            pending.label = "pipeline(" + ",".join(labels) + ")"
            return orig_pipe(conn, commands)

        def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> Any:
            counter[getattr(pending, "label", "?")] += 1
            pending.label = "?"
            return orig_packed(conn, command, check_health)

        cls.send_command, cls.send_packed_command, cls.pack_commands = (
            send_command,
            send_packed_command,
            pack_commands,
        )
        try:
            yield self
        finally:
            cls.send_command, cls.send_packed_command, cls.pack_commands = orig_send, orig_packed, orig_pipe
