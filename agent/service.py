"""The gRPC servicers: lifecycle, bootstrap, health and simulation, shared by the agent and the simulator.

A servicer never owns a runtime. It asks a :class:`Host` to resolve each call to an
:class:`Instance` (the real agent: its one runtime, after checking the ``x-vkec2-instance-id``
metadata; the simulator: the virtual agent of that instance, if it exists and has booted) and
translates :class:`agent.model.AgentCallError` into gRPC status codes with the runtime's message.
A forced simulation state (:class:`SimControl`) is applied here, on the way out, so it works the
same over the process and the simulated runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

import agent
from agent.bootstrap import Identity, TlsMaterial
from agent.logs import LogQuery
from agent.model import (
    AgentCallError,
    ConditionTracker,
    ContainerSnapshot,
    PodSnapshot,
    Running,
    State,
    Terminated,
    Waiting,
    derive_conditions,
)
from agent.runtime import Runtime
from agent.v1 import agent_pb2, simulation_pb2
from agent.v1 import agent_pb2_grpc as _agent_grpc
from agent.v1 import simulation_pb2_grpc as _simulation_grpc

# The generated gRPC modules are untyped: use them through Any.
agent_pb2_grpc: Any = _agent_grpc
simulation_pb2_grpc: Any = _simulation_grpc

INSTANCE_ID_KEY = "x-vkec2-instance-id"
LIFECYCLE_SERVICE = "vkec2.agent.v1.ApplicationLifecycle"
BOOTSTRAP_SERVICE = "vkec2.agent.v1.AgentBootstrap"
SIMULATION_SERVICE = "vkec2.agent.v1.Simulation"
HEALTH_SERVICE = "grpc.health.v1.Health"

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Simulation control


@dataclass(frozen=True)
class Forced:
    state: int = simulation_pb2.FORCED_STATE_UNSPECIFIED
    delay_ms: int = 0
    no_answer: bool = False
    reason: str = ""
    message: str = ""
    exit_code: int = 0


class SimControl:
    """The forced state of one agent (or virtual agent), set through the Simulation service."""

    __slots__ = ("forced",)

    def __init__(self) -> None:
        self.forced = Forced()

    @property
    def active(self) -> bool:
        return self.forced != Forced()


def apply_forced(snap: PodSnapshot, forced: Forced) -> PodSnapshot:
    """What the agent reports when a state is forced: the phase and container states to match."""
    state = forced.state
    if state in (simulation_pb2.FORCED_STATE_UNSPECIFIED, simulation_pb2.FORCED_STATE_NOT_SERVING):
        return snap
    now = snap.start_time or 0.0
    phase: str
    new_state: State
    if state == simulation_pb2.FORCED_STATE_RUNNING:
        phase, new_state = "Running", Running(now)
    elif state == simulation_pb2.FORCED_STATE_FAILED:
        code = forced.exit_code or 1
        phase, new_state = "Failed", Terminated(code, "Error", now, now, message=forced.message)
    elif state == simulation_pb2.FORCED_STATE_SUCCEEDED:
        phase, new_state = "Succeeded", Terminated(0, "Completed", now, now)
    elif state == simulation_pb2.FORCED_STATE_PENDING:
        phase, new_state = "Pending", Waiting("ContainerCreating", forced.message)
    else:
        phase, new_state = "Unknown", Waiting("ContainerStatusUnknown", forced.message)
    running = isinstance(new_state, Running)
    statuses = tuple(replace(c, state=new_state, ready=running, started=running) for c in snap.statuses)
    conds = derive_conditions(ConditionTracker(), phase, snap.init_statuses, statuses, snap.start_time)
    default_reason = {"Failed": "SimulatedFailure", "Unknown": "SimulatedUnknown"}.get(phase, "")
    return replace(
        snap,
        phase=phase,
        statuses=statuses,
        conditions=conds,
        reason=forced.reason or default_reason,
        message=forced.message or snap.message,
    )


def forced_to_pb(control: SimControl, runtime: Runtime) -> simulation_pb2.SimulationState:
    f = control.forced
    random_on, seed = getattr(runtime, "random_status", (False, 0))
    return simulation_pb2.SimulationState(
        state=cast(Any, f.state),
        delay_ms=f.delay_ms,
        no_answer=f.no_answer,
        reason=f.reason,
        message=f.message,
        exit_code=f.exit_code,
        random_status=random_on,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------
# Hosts


class Instance:
    """What a call is routed to: one pod runtime and, when simulation is on, its control."""

    __slots__ = ("control", "instance_id", "runtime")

    def __init__(self, instance_id: str, runtime: Runtime, control: SimControl | None) -> None:
        self.instance_id = instance_id
        self.runtime = runtime
        self.control = control


class Host(Protocol):
    def resolve(self, context: grpc.ServicerContext) -> Instance:
        """The instance a lifecycle call is for; aborts the call when it is not this agent's."""
        ...

    def health_target(self, context: grpc.ServicerContext) -> Instance | None:
        """The instance a health check asks about (None: the server itself)."""
        ...

    def identity(self, context: grpc.ServicerContext) -> Identity: ...

    def mode(self) -> str: ...

    def authenticate(self, material: TlsMaterial, context: grpc.ServicerContext) -> str:
        """Switch to mTLS with this material; returns the new mode or aborts the call."""
        ...


def metadata_instance_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == INSTANCE_ID_KEY:
            return str(value)
    return ""


def check_instance_id(context: grpc.ServicerContext, mine: str) -> None:
    """Refuse a call that does not name this agent's instance (an IP reused by another instance)."""
    wanted = metadata_instance_id(context)
    if not wanted:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"missing {INSTANCE_ID_KEY} metadata: every call must name the instance it expects",
        )
    if wanted != mine:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"instance ID mismatch: this agent runs on {mine}, the caller expected {wanted}",
        )


# ------------------------------------------------------------------------------------------------
# Conversion to protobuf


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1_000_000_000))
    return ts


def state_pb(st: State | None) -> agent_pb2.ContainerState | None:
    if st is None:
        return None
    if isinstance(st, Waiting):
        return agent_pb2.ContainerState(
            waiting=agent_pb2.ContainerStateWaiting(reason=st.reason, message=st.message)
        )
    if isinstance(st, Running):
        return agent_pb2.ContainerState(
            running=agent_pb2.ContainerStateRunning(started_at=_ts(st.started_at))
        )
    return agent_pb2.ContainerState(
        terminated=agent_pb2.ContainerStateTerminated(
            exit_code=st.exit_code,
            signal=st.signal,
            reason=st.reason,
            message=st.message,
            started_at=_ts(st.started_at),
            finished_at=_ts(st.finished_at),
        )
    )


def container_pb(c: ContainerSnapshot) -> agent_pb2.ContainerStatus:
    return agent_pb2.ContainerStatus(
        name=c.name,
        ready=c.ready,
        restart_count=c.restart_count,
        state=state_pb(c.state),
        last_state=state_pb(c.last_state),
        image=c.image,
        started=c.started,
        container_id=c.container_id,
    )


def status_pb(s: PodSnapshot) -> agent_pb2.PodStatus:
    return agent_pb2.PodStatus(
        phase=s.phase,
        conditions=[
            agent_pb2.PodCondition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message,
                last_transition_time=_ts(c.last_transition or None),
            )
            for c in s.conditions
        ],
        init_container_statuses=[container_pb(c) for c in s.init_statuses],
        container_statuses=[container_pb(c) for c in s.statuses],
        reason=s.reason,
        message=s.message,
        pod_ip=s.pod_ip,
        start_time=_ts(s.start_time),
        pod_uid=s.pod_uid,
        version=s.version,
    )


# ------------------------------------------------------------------------------------------------
# Servicers


def _abort_for(context: grpc.ServicerContext, exc: AgentCallError) -> Any:
    return context.abort(getattr(grpc.StatusCode, exc.code), exc.message)


def _hang(context: grpc.ServicerContext) -> None:
    """Simulated 'no answer': hold the call until the caller gives up (its deadline or a cancel)."""
    done = threading.Event()
    context.add_callback(done.set)
    remaining = context.time_remaining()
    done.wait(3600 if remaining is None else remaining + 1.0)
    context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "simulated: the agent never answered")


def gate(inst: Instance | None, context: grpc.ServicerContext, *, health: bool = False) -> bool:
    """Apply a forced simulation behaviour before answering; False means 'report NOT_SERVING'."""
    if inst is None or inst.control is None:
        return True
    f = inst.control.forced
    if f.no_answer:
        _hang(context)
    if f.delay_ms:
        threading.Event().wait(f.delay_ms / 1000.0)
    if f.state == simulation_pb2.FORCED_STATE_NOT_SERVING:
        if health:
            return False
        context.abort(grpc.StatusCode.UNAVAILABLE, "simulated: the agent is not serving")
    return True


class LifecycleServicer(agent_pb2_grpc.ApplicationLifecycleServicer):  # type: ignore[misc,unused-ignore]
    def __init__(self, host: Host) -> None:
        self._host = host

    def _enter(self, context: grpc.ServicerContext) -> Instance:
        inst = self._host.resolve(context)
        gate(inst, context)
        return inst

    @staticmethod
    def _shown(inst: Instance, snap: PodSnapshot) -> agent_pb2.PodStatus:
        if inst.control is not None and inst.control.active:
            snap = apply_forced(snap, inst.control.forced)
        return status_pb(snap)

    @staticmethod
    def _call(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except AgentCallError as exc:
            return _abort_for(context, exc)  # type: ignore[no-any-return]

    def LaunchApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        snap = self._call(context, lambda: inst.runtime.launch(request.pod_json))
        return agent_pb2.LaunchApplicationResponse(status=self._shown(inst, snap))

    def TerminateApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        if request.grace_seconds < 0:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"grace_seconds must be >= 0, got {request.grace_seconds}"
            )
        snap = self._call(context, lambda: inst.runtime.terminate(float(request.grace_seconds)))
        return agent_pb2.TerminateApplicationResponse(status=self._shown(inst, snap))

    def CheckApplicationHealth(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        return agent_pb2.CheckApplicationHealthResponse(status=self._shown(inst, inst.runtime.snapshot()))

    def WatchApplicationHealth(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        inst = self._enter(context)
        last: tuple[Any, ...] | None = None
        while context.is_active():
            snap = inst.runtime.snapshot()
            shown = snap
            if inst.control is not None and inst.control.active:
                shown = apply_forced(snap, inst.control.forced)
            sig = shown.signature()
            if sig != last:
                last = sig
                yield agent_pb2.CheckApplicationHealthResponse(status=status_pb(shown))
            inst.runtime.wait_for_change(snap.version, 1.0)

    def GetLogs(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        inst = self._enter(context)
        for field in ("tail_lines", "since_seconds", "limit_bytes"):
            if request.HasField(field):
                value = getattr(request, field)
                if value < 0 or (value == 0 and field != "tail_lines"):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} must be positive, got {value}")
        query = LogQuery(
            follow=request.follow,
            tail_lines=request.tail_lines if request.HasField("tail_lines") else None,
            since_seconds=request.since_seconds if request.HasField("since_seconds") else None,
            timestamps=request.timestamps,
            limit_bytes=request.limit_bytes if request.HasField("limit_bytes") else None,
        )
        chunks = self._call(
            context, lambda: inst.runtime.logs(request.container, request.previous, query, context.is_active)
        )
        for data in chunks:
            yield agent_pb2.LogChunk(data=data)

    def Exec(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        inst = self._enter(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first Exec message must be 'start'")
        start = first.start
        session = self._call(
            context, lambda: inst.runtime.exec(start.container, list(start.command), start.tty, start.stdin)
        )

        def feed() -> None:
            try:
                for req in request_iterator:
                    kind = req.WhichOneof("msg")
                    if kind == "stdin":
                        session.write_stdin(req.stdin)
                    elif kind == "resize":
                        session.resize(req.resize.width, req.resize.height)
                    elif kind == "close_stdin":
                        session.close_stdin()
            except grpc.RpcError:
                pass
            except Exception:
                pass
            session.close_stdin()

        context.add_callback(session.kill)
        threading.Thread(target=feed, name="vkec2-exec-stdin", daemon=True).start()
        for stream, data in session.output():
            if stream == "stderr":
                yield agent_pb2.ExecResponse(stderr=data)
            else:
                yield agent_pb2.ExecResponse(stdout=data)
        yield agent_pb2.ExecResponse(exit_code=session.wait())


class BootstrapServicer(agent_pb2_grpc.AgentBootstrapServicer):  # type: ignore[misc,unused-ignore]
    def __init__(self, host: Host) -> None:
        self._host = host

    def GetAgentIdentity(self, request: Any, context: grpc.ServicerContext) -> Any:
        ident = self._host.identity(context)
        return agent_pb2.AgentIdentity(
            instance_id=ident.instance_id,
            region=ident.region,
            availability_zone=ident.availability_zone,
            identity_document=ident.document,
            signature=ident.signature,
            source=ident.source,
            mode=self._host.mode(),
            agent_version=agent.__version__,
        )

    def LaunchAuthenticatedEndpoint(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._host.resolve(context)
        material = TlsMaterial(request.server_cert_pem, request.server_key_pem, request.ca_cert_pem)
        try:
            material.validate()
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        mode = self._host.authenticate(material, context)
        return agent_pb2.LaunchAuthenticatedEndpointResponse(mode=mode)


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc,unused-ignore]
    """grpc.health.v1 that knows about forced simulation states and the simulator's instances."""

    def __init__(self, host: Host, services: set[str]) -> None:
        self._host = host
        self._services = services | {"", HEALTH_SERVICE}

    def _status(self, request: Any, context: grpc.ServicerContext) -> tuple[int, Instance | None]:
        if request.service not in self._services:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        inst = self._host.health_target(context)
        ok = gate(inst, context, health=True)
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        return status, inst

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        status, _ = self._status(request, context)
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        last = None
        pause = threading.Event()
        while context.is_active():
            status, inst = self._status(request, context)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            if inst is not None:
                inst.runtime.wait_for_change(inst.runtime.snapshot().version, 1.0)
            else:
                pause.wait(1.0)


class SimulationServicer(simulation_pb2_grpc.SimulationServicer):  # type: ignore[misc,unused-ignore]
    def __init__(self, host: Host) -> None:
        self._host = host

    def _inst(self, context: grpc.ServicerContext) -> tuple[Instance, SimControl]:
        inst = self._host.resolve(context)
        if inst.control is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "simulation is not enabled on this agent")
        assert inst.control is not None
        return inst, inst.control

    def SetApplicationState(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst, control = self._inst(context)
        control.forced = Forced(
            request.state,
            request.delay_ms,
            request.no_answer,
            request.reason,
            request.message,
            request.exit_code,
        )
        inst.runtime.notify()
        return forced_to_pb(control, inst.runtime)

    def ClearApplicationState(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst, control = self._inst(context)
        control.forced = Forced()
        inst.runtime.notify()
        return forced_to_pb(control, inst.runtime)

    def GetSimulationState(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst, control = self._inst(context)
        return forced_to_pb(control, inst.runtime)

    def SetRandomStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst, control = self._inst(context)
        set_random = getattr(inst.runtime, "set_random", None)
        if set_random is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "random statuses need the simulated runtime (--runtime sim)",
            )
        set_random(request.enabled, request.seed)
        return forced_to_pb(control, inst.runtime)


def add_services(server: grpc.Server, host: Host, *, lifecycle: bool, simulation: bool) -> set[str]:
    """Register the services of one serving mode on ``server``; returns their names."""
    names = {BOOTSTRAP_SERVICE}
    agent_pb2_grpc.add_AgentBootstrapServicer_to_server(BootstrapServicer(host), server)
    if lifecycle:
        agent_pb2_grpc.add_ApplicationLifecycleServicer_to_server(LifecycleServicer(host), server)
        names.add(LIFECYCLE_SERVICE)
        if simulation:
            simulation_pb2_grpc.add_SimulationServicer_to_server(SimulationServicer(host), server)
            names.add(SIMULATION_SERVICE)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(host, names), server)
    return names


SERVER_OPTIONS = [
    # Let fleet clients keep long streams (follow, watch, exec) alive with pings every few seconds.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
