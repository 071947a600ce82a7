"""A simulated exec session: what ``kubectl exec`` into a container of the simulated runtime gets.

Nothing is run. The session announces the command on stdout, echoes whatever arrives on stdin back
to stdout, reports a resize as a line of text, and exits 0 (or N for the command ``exit N``);
killing it exits 137. It implements :class:`agent.runtime.ExecSession`, so the lifecycle servicer
streams it exactly like a real process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


class SimExec:
    """A simulated exec: announces the command, echoes stdin to stdout, exits 0 (or ``exit N``)."""

    def __init__(self, container: str, command: list[str], stdin: bool) -> None:
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._queue.put(("stdout", f"simulated exec in {container}: {' '.join(command)}\n".encode()))
        self._code = 0
        if len(command) == 2 and command[0] == "exit" and command[1].isdigit():
            self._code = int(command[1])
        self._closed = threading.Event()
        if not stdin:
            self.close_stdin()

    def write_stdin(self, data: bytes) -> None:
        if not self._closed.is_set():
            self._queue.put(("stdout", data))

    def close_stdin(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(None)

    def resize(self, width: int, height: int) -> None:
        self._queue.put(("stdout", f"resized to {width}x{height}\n".encode()))

    def output(self) -> Iterator[tuple[str, bytes]]:
        while (item := self._queue.get()) is not None:
            yield item

    def wait(self) -> int:
        self._closed.wait()
        return self._code

    def kill(self) -> None:
        self._code = 137
        self.close_stdin()
