"""The fleet's gRPC client for the agent on each instance (workers; the producer for logs and stats).

It calls the agent named by an :class:`~vkec2.domain.agents.AgentTarget` (whose endpoint
:func:`~vkec2.domain.agents.resolve_endpoint` derives from the instance), keeps one lazily created
channel per endpoint and transport (reset after a fork, so Celery's prefork children never share a
parent's channels), puts a deadline on every unary call, names the expected instance in the
``x-vkec2-instance-id`` metadata of every call, and maps gRPC status codes onto the fleet's errors:
UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED / RESOURCE_EXHAUSTED / ABORTED become
:class:`AgentUnavailable` (retry later, like an agent that has not booted yet), refusals
(INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, UNAUTHENTICATED …) become :class:`AgentRejected`,
an agent of another instance (PERMISSION_DENIED) becomes :class:`AgentIdentityMismatch`, and the
rest (INTERNAL, UNKNOWN, DATA_LOSS) the plain :class:`AgentError` of a faulty agent (what the pod
does with each is the table "What each error does" in docs/architecture.md). With TLS configured,
calls go over mTLS and the agent's certificate must name the target instance; only health, identity
and the bootstrap (a CSR the fleet signs, :meth:`AgentClient.bootstrap`) fall back to plaintext,
to reach an agent that has not been bootstrapped yet. A pod spec that carries sealed ConfigMap/Secret
content (:data:`~vkec2.contract.RESOLVED_FIELD`) is opened here, just before LaunchApplication /
UpdateVolumes carry it to the agent, and never sent inside ``pod_json``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.stats import InstanceStats, stats_of_pb
from agent.v1 import agent_pb2
from agent.v1 import agent_pb2_grpc as _agent_grpc
from vkec2.agent_client.statuses import app_status
from vkec2.ca import ClientTls, agent_server_name
from vkec2.config import AgentConnection
from vkec2.domain.agents import AgentTarget, AppStatus
from vkec2.domain.sealed import Sealer, SealingError, split_resolved
from vkec2.errors import AgentError, AgentIdentityMismatch, AgentRejected, AgentUnavailable
from vkec2.observability import metrics

INSTANCE_ID_KEY = "x-vkec2-instance-id"
agent_pb2_grpc: Any = _agent_grpc  # generated, untyped
#: Signs an agent's CSR after checking it: (AgentIdentity, CertificateRequest, nonce) -> (cert, chain).
Signer = Callable[[Any, Any, bytes], tuple[bytes, bytes]]

_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
_REJECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
}


def translate(err: grpc.RpcError, target: AgentTarget, what: str) -> AgentError:
    """The fleet error for a failed agent call."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    message = f"agent of {target.instance_id} at {target.endpoint}: {what}: {code.name}: {details}"
    if code in _UNAVAILABLE:
        return AgentUnavailable(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return AgentIdentityMismatch(message)
    if code in _REJECTED:
        return AgentRejected(message)
    return AgentError(message)


@dataclass
class _Stubs:
    channel: grpc.Channel
    lifecycle: Any
    bootstrap: Any
    health: Any


class AgentClient:
    """Calls agents; thread-safe; one channel per (endpoint, transport[, instance for mTLS])."""

    def __init__(
        self, conn: AgentConnection, tls: ClientTls | None = None, sealer: Sealer | None = None
    ) -> None:
        self._conn = conn
        self._sealer = sealer
        if tls is None and conn.tls is not None:
            tls = ClientTls.from_config(conn.tls)
        self._tls = tls
        self._creds = (
            grpc.ssl_channel_credentials(tls.ca_cert_pem, tls.key_pem, tls.cert_pem)
            if tls is not None
            else None
        )
        self._stubs: dict[tuple[str, str, str], _Stubs] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    # -- channels --------------------------------------------------------------------------
    def _options(self) -> list[tuple[str, Any]]:
        c = self._conn
        return [
            ("grpc.keepalive_time_ms", int(c.keepalive.time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(c.keepalive.timeout_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", max(1, int(c.backoff.base_delay_seconds * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(c.backoff.max_delay_seconds * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(1, int(c.connect_timeout_seconds * 1000))),
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ]

    def _get(self, target: AgentTarget, secure: bool) -> _Stubs:
        if os.getpid() != self._pid:
            # A forked child must not use its parent's channels: start afresh (never close them).
            self._stubs, self._lock, self._pid = {}, threading.Lock(), os.getpid()
        key = (target.endpoint, "mtls", target.instance_id) if secure else (target.endpoint, "plain", "")
        stubs = self._stubs.get(key)
        if stubs is not None:
            return stubs
        with self._lock:
            stubs = self._stubs.get(key)
            if stubs is None:
                options = self._options()
                if secure:
                    assert self._creds is not None
                    options.append(("grpc.ssl_target_name_override", agent_server_name(target.instance_id)))
                    channel = grpc.secure_channel(target.endpoint, self._creds, options=options)
                else:
                    channel = grpc.insecure_channel(target.endpoint, options=options)
                channel = metrics.count_agent_calls(channel)
                stubs = _Stubs(
                    channel,
                    agent_pb2_grpc.ApplicationLifecycleStub(channel),
                    agent_pb2_grpc.AgentBootstrapStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
                self._stubs[key] = stubs
        return stubs

    def _transports(self) -> list[bool]:
        return [True, False] if self._tls is not None else [False]

    @staticmethod
    def _md(target: AgentTarget) -> tuple[tuple[str, str], ...]:
        return ((INSTANCE_ID_KEY, target.instance_id),)

    def _lifecycle(self, target: AgentTarget, method: str, request: Any, extra_seconds: float = 0.0) -> Any:
        stub = self._get(target, self._tls is not None).lifecycle
        try:
            return getattr(stub, method)(
                request, timeout=self._conn.call_timeout_seconds + extra_seconds, metadata=self._md(target)
            )
        except grpc.RpcError as err:
            raise translate(err, target, method) from None

    # -- API -------------------------------------------------------------------------------
    def serving(self, target: AgentTarget) -> bool:
        """True when the agent answers grpc.health SERVING (over mTLS, or plaintext before bootstrap)."""
        for secure in self._transports():
            try:
                resp = self._get(target, secure).health.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=self._conn.call_timeout_seconds,
                    metadata=self._md(target),
                )
            except grpc.RpcError as err:
                if isinstance(err, grpc.Call) and err.code() in _UNAVAILABLE:
                    continue
                return False
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
        return False

    def _identity(self, target: AgentTarget) -> tuple[Any, bool]:
        last: grpc.RpcError | None = None
        for secure in self._transports():
            try:
                ident = self._get(target, secure).bootstrap.GetAgentIdentity(
                    agent_pb2.GetAgentIdentityRequest(),
                    timeout=self._conn.call_timeout_seconds,
                    metadata=self._md(target),
                )
                return ident, secure
            except grpc.RpcError as err:
                last = err
                if isinstance(err, grpc.Call) and err.code() in _UNAVAILABLE:
                    continue
                raise translate(err, target, "GetAgentIdentity") from None
        assert last is not None
        raise translate(last, target, "GetAgentIdentity")

    def identity(self, target: AgentTarget) -> str:
        """The instance ID the agent reports about itself."""
        return str(self._identity(target)[0].instance_id)

    def bootstrap(self, target: AgentTarget, sign: Signer) -> None:
        """Bring the agent to mTLS: its CSR, signed by ``sign`` after the checks, then a check over mTLS.

        A no-op once the agent is authenticated. ``sign(identity, request, nonce)`` gets the agent's
        AgentIdentity, its CertificateRequest for a fresh ``nonce``, and returns the certificate and
        chain, or raises :class:`AgentBootstrapRefused` (see :mod:`vkec2.agent_client.bootstrap`).
        """
        ident, secure = self._identity(target)
        if ident.instance_id != target.instance_id:
            raise AgentIdentityMismatch(
                f"agent at {target.endpoint} belongs to {ident.instance_id}, expected {target.instance_id}"
            )
        if ident.mode == "authenticated":
            return
        if ident.mode == "insecure":
            if self._tls is not None:
                raise AgentRejected(
                    f"agent of {target.instance_id} at {target.endpoint} runs --insecure, "
                    "but this fleet requires mTLS (agent.tls is set)"
                )
            return
        if self._tls is None:
            raise AgentRejected(
                f"agent of {target.instance_id} at {target.endpoint} waits for its TLS bootstrap, "
                "but this client has no TLS configuration (agent.tls)"
            )
        bootstrap = self._get(target, secure).bootstrap
        nonce = os.urandom(32)
        try:
            answer = bootstrap.CreateCertificateRequest(
                agent_pb2.CreateCertificateRequestRequest(nonce=nonce),
                timeout=self._conn.call_timeout_seconds,
                metadata=self._md(target),
            )
        except grpc.RpcError as err:
            raise translate(err, target, "CreateCertificateRequest") from None
        cert_pem, chain_pem = sign(ident, answer, nonce)
        request = agent_pb2.LaunchAuthenticatedEndpointRequest(
            server_cert_pem=cert_pem, ca_chain_pem=chain_pem
        )
        try:
            bootstrap.LaunchAuthenticatedEndpoint(
                request, timeout=self._conn.call_timeout_seconds, metadata=self._md(target)
            )
        except grpc.RpcError as err:
            concurrent = (
                isinstance(err, grpc.Call)
                and err.code() == grpc.StatusCode.FAILED_PRECONDITION
                and "already authenticated" in (err.details() or "")
            )
            if not concurrent:  # another worker won the race: check that mTLS works below
                raise translate(err, target, "LaunchAuthenticatedEndpoint") from None
        try:
            resp = self._get(target, True).health.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self._conn.call_timeout_seconds,
                metadata=self._md(target),
                wait_for_ready=True,
            )
        except grpc.RpcError as err:
            raise translate(err, target, "health check over mTLS after bootstrap") from None
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise AgentUnavailable(f"agent of {target.instance_id} is not serving after bootstrap")

    def _opened(self, pod: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        plain, stored = split_resolved(pod)
        if stored is None:
            return plain, ""
        if self._sealer is None:
            raise AgentRejected(
                "the pod's ConfigMap/Secret content is sealed, and this worker holds no secrets key "
                "(secrets.keys / secrets.key_file)",
                reason=SealingError.reason,
            )
        try:
            return plain, json.dumps(self._sealer.open(stored))
        except SealingError as exc:
            raise AgentRejected(exc.message, reason=exc.reason) from None

    def launch(self, target: AgentTarget, pod: Mapping[str, Any]) -> None:
        plain, resolved = self._opened(pod)
        self._lifecycle(
            target,
            "LaunchApplication",
            agent_pb2.LaunchApplicationRequest(pod_json=json.dumps(plain), resolved_json=resolved),
        )

    def update_volumes(self, target: AgentTarget, pod: Mapping[str, Any]) -> list[str]:
        """UpdateVolumes with the pod's current sealed content; the volumes whose files changed."""
        plain, resolved = self._opened(pod)
        if not resolved:
            return []
        uid = str((plain.get("metadata") or {}).get("uid") or "")
        resp = self._lifecycle(
            target, "UpdateVolumes", agent_pb2.UpdateVolumesRequest(pod_uid=uid, resolved_json=resolved)
        )
        return list(resp.changed)

    def status(self, target: AgentTarget) -> AppStatus:
        resp = self._lifecycle(target, "CheckApplicationHealth", agent_pb2.CheckApplicationHealthRequest())
        return app_status(resp.status)

    def stats(self, target: AgentTarget, timeout: float | None = None) -> InstanceStats:
        """The instance's resource usage (``GetStats``); ``timeout`` shortens the call's deadline."""
        extra = 0.0 if timeout is None else timeout - self._conn.call_timeout_seconds
        return stats_of_pb(self._lifecycle(target, "GetStats", agent_pb2.GetStatsRequest(), extra))

    def terminate(self, target: AgentTarget, grace_seconds: int, *, wait: bool = True) -> None:
        """Stop the workload (SIGTERM, ``grace_seconds``, SIGKILL).

        With ``wait`` the agent answers once the workload is gone, so the deadline includes the
        grace; without, it answers at once and stops the workload in the background (the caller
        polls :meth:`status`), so the call costs one ordinary deadline.
        """
        self._lifecycle(
            target,
            "TerminateApplication",
            agent_pb2.TerminateApplicationRequest(grace_seconds=grace_seconds, background=not wait),
            extra_seconds=max(0, grace_seconds) if wait else 0.0,
        )

    def watch(self, target: AgentTarget) -> Iterator[AppStatus]:
        """The status now, then one per change; no deadline (close the iterator to stop)."""
        stub = self._get(target, self._tls is not None).lifecycle
        call = stub.WatchApplicationHealth(
            agent_pb2.WatchApplicationHealthRequest(), metadata=self._md(target)
        )
        try:
            for resp in call:
                yield app_status(resp.status)
        except grpc.RpcError as err:
            raise translate(err, target, "WatchApplicationHealth") from None
        finally:
            call.cancel()

    def logs(
        self,
        target: AgentTarget,
        container: str,
        *,
        follow: bool = False,
        tail_lines: int | None = None,
        since_seconds: int | None = None,
        timestamps: bool = False,
        previous: bool = False,
        limit_bytes: int | None = None,
    ) -> Iterator[bytes]:
        """A container's log; with ``follow`` the stream has no deadline and ends with the container."""
        request = agent_pb2.GetLogsRequest(
            container=container, follow=follow, timestamps=timestamps, previous=previous
        )
        if tail_lines is not None:
            request.tail_lines = tail_lines
        if since_seconds is not None:
            request.since_seconds = since_seconds
        if limit_bytes is not None:
            request.limit_bytes = limit_bytes
        stub = self._get(target, self._tls is not None).lifecycle
        timeout = None if follow else self._conn.call_timeout_seconds
        call = stub.GetLogs(request, timeout=timeout, metadata=self._md(target))
        try:
            for chunk in call:
                yield bytes(chunk.data)
        except grpc.RpcError as err:
            raise translate(err, target, "GetLogs") from None
        finally:
            call.cancel()

    def exec_stream(
        self,
        target: AgentTarget,
        container: str,
        command: list[str],
        *,
        stdin: Iterable[bytes | tuple[int, int]] | None = None,
        tty: bool = False,
        open_stdin: bool | None = None,
    ) -> Iterator[tuple[str, bytes | int]]:
        """Run a command in a container: yields (``stdout``|``stderr``, bytes) and last (``exit``, code).

        ``stdin`` carries the input: bytes, and (width, height) terminal sizes; the command's stdin
        is open when ``open_stdin`` (default: when there is input) and closed when ``stdin`` ends.
        """

        def requests() -> Iterator[Any]:
            want = stdin is not None if open_stdin is None else open_stdin
            yield agent_pb2.ExecRequest(
                start=agent_pb2.ExecStart(container=container, command=command, tty=tty, stdin=want)
            )
            if stdin is not None:
                for item in stdin:
                    if isinstance(item, tuple):
                        size = agent_pb2.TerminalSize(width=item[0], height=item[1])
                        yield agent_pb2.ExecRequest(resize=size)
                    else:
                        yield agent_pb2.ExecRequest(stdin=item)
                yield agent_pb2.ExecRequest(close_stdin=True)

        stub = self._get(target, self._tls is not None).lifecycle
        call = stub.Exec(requests(), metadata=self._md(target))
        try:
            for resp in call:
                kind = resp.WhichOneof("msg")
                if kind == "exit_code":
                    yield "exit", int(resp.exit_code)
                elif kind in ("stdout", "stderr"):
                    yield kind, bytes(getattr(resp, kind))
        except grpc.RpcError as err:
            raise translate(err, target, "Exec") from None
        finally:
            call.cancel()

    def port_forward(self, target: AgentTarget, port: int, data: Iterable[bytes]) -> Iterator[bytes]:
        """One connection to ``port`` on the instance: ``data`` is sent (its end closes our writing half).

        Returns once the agent has connected (or raises); iterate the result for the port's bytes.
        """

        def requests() -> Iterator[Any]:
            yield agent_pb2.PortForwardRequest(start=agent_pb2.PortForwardStart(port=port))
            for chunk in data:
                yield agent_pb2.PortForwardRequest(data=chunk)
            yield agent_pb2.PortForwardRequest(close_write=True)

        stub = self._get(target, self._tls is not None).lifecycle
        call = stub.PortForward(requests(), metadata=self._md(target))
        try:
            first = next(call, None)
        except grpc.RpcError as err:
            call.cancel()
            raise translate(err, target, "PortForward") from None
        if first is None or first.WhichOneof("msg") != "connected":
            call.cancel()
            raise AgentError(f"agent {target.instance_id} did not open port {port}")

        def output() -> Iterator[bytes]:
            try:
                for resp in call:
                    if resp.WhichOneof("msg") == "data":
                        yield bytes(resp.data)
            except grpc.RpcError as err:
                raise translate(err, target, "PortForward") from None
            finally:
                call.cancel()

        return output()

    def close(self) -> None:
        with self._lock:
            stubs, self._stubs = self._stubs, {}
        if os.getpid() == self._pid:
            for s in stubs.values():
                s.channel.close()
