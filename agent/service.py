"""The gRPC servicers of an agent: lifecycle, bootstrap and health, shared by the agent and the simulator.

A servicer never owns a runtime: it asks a :class:`agent.host.Host` to resolve each call to an
:class:`agent.host.Instance`, calls that instance's runtime, turns the snapshots into protobuf
(:mod:`agent.convert`) and translates :class:`agent.model.AgentCallError` into gRPC status codes
with the runtime's message. Anything served beyond these (the Simulation service and its fault
injection, in :mod:`agent.sim`) comes in as an :class:`Extension`: extra services and server
interceptors, so the agent itself knows nothing of simulation.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import agent
from agent.bootstrap import MIN_NONCE_BYTES
from agent.convert import status_pb
from agent.host import Host, Instance
from agent.logs import LogQuery
from agent.model import AgentCallError
from agent.podspec import merge_resolved
from agent.portforward import Forward
from agent.stats import stats_pb
from agent.v1 import agent_pb2
from agent.v1 import agent_pb2_grpc as _agent_grpc

# The generated gRPC modules are untyped: use them through Any.
agent_pb2_grpc: Any = _agent_grpc

LIFECYCLE_SERVICE = "vkec2.agent.v1.ApplicationLifecycle"
BOOTSTRAP_SERVICE = "vkec2.agent.v1.AgentBootstrap"
HEALTH_SERVICE = "grpc.health.v1.Health"

SERVER_OPTIONS = [
    # Let fleet clients keep long streams (follow, watch, exec) alive with pings every few seconds.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]

T = TypeVar("T")


class Extension(Protocol):
    """More than the agent's own services: interceptors on every call, services next to the lifecycle."""

    def interceptors(self, host: Host) -> Sequence[grpc.ServerInterceptor]:
        """Interceptors for a server of ``host`` (they see every call, in every serving mode)."""
        ...

    def add_services(self, server: grpc.Server, host: Host) -> set[str]:
        """Register services served with the lifecycle service; returns their names."""
        ...


def _abort_for(context: grpc.ServicerContext, exc: AgentCallError) -> Any:
    return context.abort(getattr(grpc.StatusCode, exc.code), exc.message)


class LifecycleServicer(agent_pb2_grpc.ApplicationLifecycleServicer):  # type: ignore[misc,unused-ignore]
    """ApplicationLifecycle: launch, terminate, health, logs and exec of the instance's one pod."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def _enter(self, context: grpc.ServicerContext) -> Instance:
        return self._host.resolve(context)

    @staticmethod
    def _call(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except AgentCallError as exc:
            return _abort_for(context, exc)  # type: ignore[no-any-return]

    def LaunchApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        snap = self._call(
            context, lambda: inst.runtime.launch(merge_resolved(request.pod_json, request.resolved_json))
        )
        return agent_pb2.LaunchApplicationResponse(status=status_pb(snap))

    def UpdateVolumes(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        changed = self._call(
            context, lambda: inst.runtime.update_volumes(request.pod_uid, request.resolved_json)
        )
        return agent_pb2.UpdateVolumesResponse(changed=changed)

    def TerminateApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        if request.grace_seconds < 0:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"grace_seconds must be >= 0, got {request.grace_seconds}"
            )
        grace = float(request.grace_seconds)
        if request.background:
            # Answer at once; SIGTERM, the grace period and SIGKILL run on a thread of their own.
            threading.Thread(
                target=self._terminate_quietly, args=(inst, grace), name="terminate", daemon=True
            ).start()
            snap = self._call(context, inst.runtime.snapshot)
        else:
            snap = self._call(context, lambda: inst.runtime.terminate(grace))
        return agent_pb2.TerminateApplicationResponse(status=status_pb(snap))

    @staticmethod
    def _terminate_quietly(inst: Instance, grace: float) -> None:
        with contextlib.suppress(AgentCallError):  # nothing to stop: the caller sees the status it polls
            inst.runtime.terminate(grace)

    def CheckApplicationHealth(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        return agent_pb2.CheckApplicationHealthResponse(status=status_pb(inst.runtime.snapshot()))

    def WatchApplicationHealth(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        inst = self._enter(context)
        last: tuple[Any, ...] | None = None
        while context.is_active():
            snap = inst.runtime.snapshot()
            sig = snap.signature()
            if sig != last:
                last = sig
                yield agent_pb2.CheckApplicationHealthResponse(status=status_pb(snap))
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

    def GetStats(self, request: Any, context: grpc.ServicerContext) -> Any:
        inst = self._enter(context)
        return stats_pb(self._call(context, inst.runtime.stats))

    def PortForward(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        self._enter(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("msg") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first PortForward message must be 'start'")
        port = first.start.port
        forward = self._call(context, lambda: Forward(port))
        context.add_callback(forward.close)
        threading.Thread(
            target=forward.feed, args=(request_iterator,), name="vkec2-port-forward", daemon=True
        ).start()
        yield agent_pb2.PortForwardResponse(connected=True)
        for data in forward.output():
            yield agent_pb2.PortForwardResponse(data=data)


class BootstrapServicer(agent_pb2_grpc.AgentBootstrapServicer):  # type: ignore[misc,unused-ignore]
    """AgentBootstrap: who this agent is, its certificate request, and the one-shot switch to mTLS."""

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
            mode=self._host.mode(context),
            agent_version=agent.__version__,
        )

    def CreateCertificateRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        if len(request.nonce) < MIN_NONCE_BYTES or len(request.nonce) > 1024:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"nonce must be {MIN_NONCE_BYTES} to 1024 bytes, got {len(request.nonce)}",
            )
        req = self._host.certificate_request(bytes(request.nonce), context)
        return agent_pb2.CertificateRequest(
            csr_pem=req.csr_pem, identity_document=req.document, signature=req.signature, proof=req.proof
        )

    def LaunchAuthenticatedEndpoint(self, request: Any, context: grpc.ServicerContext) -> Any:
        if b"-----BEGIN CERTIFICATE-----" not in request.server_cert_pem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "server_cert_pem is not a PEM certificate")
        mode = self._host.install_certificate(
            bytes(request.server_cert_pem), bytes(request.ca_chain_pem), context
        )
        return agent_pb2.LaunchAuthenticatedEndpointResponse(mode=mode)


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc,unused-ignore]
    """grpc.health.v1 for the services served; with a target instance, Watch follows its runtime."""

    def __init__(self, host: Host, services: set[str]) -> None:
        self._host = host
        self._services = services | {"", HEALTH_SERVICE}

    def _target(self, request: Any, context: grpc.ServicerContext) -> Instance | None:
        if request.service not in self._services:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return self._host.health_target(context)

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._target(request, context)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield from watch_health(self.Check, self._host, request, context)


def watch_health(
    check: Callable[[Any, grpc.ServicerContext], Any],
    host: Host,
    request: Any,
    context: grpc.ServicerContext,
) -> Iterator[Any]:
    """grpc.health Watch as a sequence of ``check`` answers: one each time the status changes.

    It asks again whenever the target instance's runtime reports a change (or every second), so an
    interceptor that alters Check's answers (:mod:`agent.sim.faults`) alters Watch's the same way.
    """
    last = None
    pause = threading.Event()
    while context.is_active():
        answer = check(request, context)
        if answer.status != last:
            last = answer.status
            yield answer
        inst = host.health_target(context)
        if inst is not None:
            inst.runtime.wait_for_change(inst.runtime.snapshot().version, 1.0)
        else:
            pause.wait(1.0)


def add_services(
    server: grpc.Server, host: Host, *, lifecycle: bool, extension: Extension | None = None
) -> set[str]:
    """Register the services of one serving mode on ``server``; returns their names."""
    names = {BOOTSTRAP_SERVICE}
    agent_pb2_grpc.add_AgentBootstrapServicer_to_server(BootstrapServicer(host), server)
    if lifecycle:
        agent_pb2_grpc.add_ApplicationLifecycleServicer_to_server(LifecycleServicer(host), server)
        names.add(LIFECYCLE_SERVICE)
        if extension is not None:
            names |= extension.add_services(server, host)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(host, names), server)
    return names


def make_server(
    executor: futures.ThreadPoolExecutor, host: Host, *, lifecycle: bool, extension: Extension | None = None
) -> grpc.Server:
    """A gRPC server (not started, no port yet) serving ``host`` in one mode, with the extension's parts."""
    interceptors = list(extension.interceptors(host)) if extension is not None else []
    server = grpc.server(executor, options=SERVER_OPTIONS, interceptors=interceptors)
    add_services(server, host, lifecycle=lifecycle, extension=extension)
    return server
