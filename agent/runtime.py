"""What the server asks of a runtime: the interface both the process and the simulated runtime offer.

A runtime owns at most one pod (one pod per instance). The server never looks inside it: it
launches, snapshots, waits for changes (watch streams), terminates, reads logs, starts exec
sessions and reads resource usage, and turns :class:`agent.model.AgentCallError` into gRPC status codes.
:class:`WrappedRuntime` is the base of a runtime that wraps another and changes only what its
snapshots show (the simulator's forced state, the Spot notice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from agent.logs import LogQuery
from agent.model import PodSnapshot
from agent.stats import InstanceStats


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

    def update_volumes(self, pod_uid: str, resolved_json: str) -> list[str]:
        """New resolved content for the running pod's volumes; the names of those that changed."""
        ...

    def logs(
        self, container: str, previous: bool, query: LogQuery, active: Callable[[], bool]
    ) -> Iterator[bytes]: ...

    def exec(self, container: str, command: list[str], tty: bool, stdin: bool) -> ExecSession: ...

    def close(self) -> None:
        """Stop everything without grace (agent shutdown)."""
        ...

    def stats(self) -> InstanceStats:
        """Resource usage of the instance and the pod's running containers (``GetStats``)."""
        ...


class WrappedRuntime:
    """A runtime that passes every call to ``inner`` and shows each snapshot through :meth:`_shown`."""

    __slots__ = ("inner",)

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner

    def _shown(self, snap: PodSnapshot) -> PodSnapshot:
        """The snapshot as this wrapper reports it (unchanged here)."""
        return snap

    def launch(self, pod_json: str) -> PodSnapshot:
        return self._shown(self.inner.launch(pod_json))

    def snapshot(self) -> PodSnapshot:
        return self._shown(self.inner.snapshot())

    def wait_for_change(self, version: int, timeout: float) -> None:
        self.inner.wait_for_change(version, timeout)

    def notify(self) -> None:
        self.inner.notify()

    def terminate(self, grace_seconds: float) -> PodSnapshot:
        return self._shown(self.inner.terminate(grace_seconds))

    def update_volumes(self, pod_uid: str, resolved_json: str) -> list[str]:
        return self.inner.update_volumes(pod_uid, resolved_json)

    def logs(
        self, container: str, previous: bool, query: LogQuery, active: Callable[[], bool]
    ) -> Iterator[bytes]:
        return self.inner.logs(container, previous, query, active)

    def exec(self, container: str, command: list[str], tty: bool, stdin: bool) -> ExecSession:
        return self.inner.exec(container, command, tty, stdin)

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> InstanceStats:
        return self.inner.stats()
