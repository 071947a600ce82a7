"""What the server asks of a runtime: the interface both the process and the simulated runtime offer.

A runtime owns at most one pod (one pod per instance). The server never looks inside it: it
launches, snapshots, waits for changes (watch streams), terminates, reads logs and starts exec
sessions, and turns :class:`agent.model.AgentCallError` into gRPC status codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from agent.logs import LogQuery
from agent.model import PodSnapshot


class ExecSession(Protocol):
    """A command running in a container, fed and read by the Exec stream."""

    def write_stdin(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None: ...

    def output(self) -> Iterator[tuple[str, bytes]]:
        """(``stdout``|``stderr``, data) pairs until both streams end."""
        ...

    def wait(self) -> int:
        """The exit code (128+N when killed by signal N)."""
        ...

    def kill(self) -> None: ...


class Runtime(Protocol):
    def launch(self, pod_json: str) -> PodSnapshot: ...

    def snapshot(self) -> PodSnapshot: ...

    def wait_for_change(self, version: int, timeout: float) -> None:
        """Return when the snapshot version moved past ``version`` or after ``timeout`` seconds."""
        ...

    def notify(self) -> None:
        """Something outside the runtime (a forced simulation state) changed what it reports."""
        ...

    def terminate(self, grace_seconds: float) -> PodSnapshot: ...

    def logs(
        self, container: str, previous: bool, query: LogQuery, active: Callable[[], bool]
    ) -> Iterator[bytes]: ...

    def exec(self, container: str, command: list[str], tty: bool, stdin: bool) -> ExecSession: ...

    def close(self) -> None:
        """Stop everything without grace (agent shutdown)."""
        ...
