"""The agent's own picture of a pod: the status it reports, runtime-neutral, and the errors it answers.

Both runtimes (process and simulated) report :class:`PodSnapshot` values (the spec they run is
:mod:`agent.podspec`); the servicers turn snapshots into protobuf messages and
:class:`AgentCallError` into gRPC status codes. Phase and conditions are derived as the kubelet
derives them, in one place, so the two runtimes cannot disagree about what a set of container
states means.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.events import AgentEvent


class AgentCallError(Exception):
    """A request the agent refuses; ``code`` names the gRPC status code the server answers with."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AgentCallError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(AgentCallError):
    code = "FAILED_PRECONDITION"


class NotFound(AgentCallError):
    code = "NOT_FOUND"


# --------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: float


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: float
    started_at: float | None = None
    signal: int = 0
    message: str = ""


State = Waiting | Running | Terminated


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


@dataclass(frozen=True)
class ContainerSnapshot:
    name: str
    image: str
    state: State
    last_state: State | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition: float = 0.0


@dataclass(frozen=True)
class SpotNotice:
    """A Spot notice from the instance metadata: ``interruption`` (with its action) or ``rebalance``."""

    kind: str
    action: str = ""
    time: str = ""


@dataclass(frozen=True)
class PodSnapshot:
    phase: str = ""
    conditions: tuple[Condition, ...] = ()
    init_statuses: tuple[ContainerSnapshot, ...] = ()
    statuses: tuple[ContainerSnapshot, ...] = ()
    reason: str = ""
    message: str = ""
    pod_ip: str = ""
    start_time: float | None = None
    pod_uid: str = ""
    version: int = 0
    spot_notice: SpotNotice | None = None
    events: tuple[AgentEvent, ...] = ()

    def signature(self) -> tuple[Any, ...]:
        """Everything but the version and transition times: equal signatures mean 'no change'."""
        conds = tuple((c.type, c.status, c.reason, c.message) for c in self.conditions)
        fields = (
            self.phase,
            conds,
            self.init_statuses,
            self.statuses,
            self.reason,
            self.message,
            self.pod_uid,
        )
        return (*fields, self.spot_notice, self.events)

    def container(self, name: str) -> ContainerSnapshot | None:
        for c in (*self.statuses, *self.init_statuses):
            if c.name == name:
                return c
        return None


def derive_phase(
    restart_policy: str,
    init_statuses: Sequence[ContainerSnapshot],
    statuses: Sequence[ContainerSnapshot],
) -> str:
    """The pod phase from container states, following the kubelet's ``getPhase``."""
    pending_init = failed_init = 0
    for s in init_statuses:
        st = s.state
        if isinstance(st, Running):
            pending_init += 1
        elif isinstance(st, Terminated):
            if st.exit_code != 0:
                failed_init += 1
        elif isinstance(s.last_state, Terminated) and s.last_state.exit_code != 0:
            failed_init += 1
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        st = s.state
        if isinstance(st, Running):
            running += 1
        elif isinstance(st, Terminated):
            stopped += 1
            if st.exit_code == 0:
                succeeded += 1
        elif isinstance(s.last_state, Terminated):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


class ConditionTracker:
    """Remembers when each pod condition last changed its status (lastTransitionTime)."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[str, float]] = {}

    def reset(self) -> None:
        self._since.clear()

    def make(
        self, type_: str, ok: bool, reason: str = "", message: str = "", now: float | None = None
    ) -> Condition:
        status = "True" if ok else "False"
        prev = self._since.get(type_)
        if prev is None or prev[0] != status:
            prev = (status, time.time() if now is None else now)
            self._since[type_] = prev
        return Condition(type_, status, "" if ok else reason, "" if ok else message, prev[1])


def derive_conditions(
    tracker: ConditionTracker,
    phase: str,
    init_statuses: Sequence[ContainerSnapshot],
    statuses: Sequence[ContainerSnapshot],
    scheduled_at: float | None = None,
) -> tuple[Condition, ...]:
    """PodScheduled, Initialized, ContainersReady and Ready, as the kubelet reports them."""
    not_init = [
        s.name for s in init_statuses if not (isinstance(s.state, Terminated) and s.state.exit_code == 0)
    ]
    unready = [s.name for s in statuses if not s.ready]
    terminal = phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
    ready_msg = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
    initialized = tracker.make(
        "Initialized",
        not not_init,
        "ContainersNotInitialized",
        f"containers with incomplete status: [{' '.join(not_init)}]",
    )
    return (
        tracker.make("PodScheduled", True, now=scheduled_at),
        initialized,
        tracker.make("ContainersReady", not unready and not terminal, ready_reason, ready_msg),
        tracker.make("Ready", not unready and not terminal, ready_reason, ready_msg),
    )


def rfc3339(ts: float) -> str:
    """Seconds precision UTC, the way Kubernetes writes timestamps."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def rfc3339_nano(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
