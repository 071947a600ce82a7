"""Where a call lands: the :class:`Host` a servicer asks, and the instance-ID metadata every call carries.

A servicer never owns a runtime. It asks a host to resolve each call to an :class:`Instance`: the
real agent (:class:`agent.server.AgentServer`) has one, after checking that the call's
``x-vkec2-instance-id`` metadata names this instance (so a private IP reused by another instance
is never driven by mistake); the simulator has one virtual agent per running instance. The host
also answers for the agent's identity and serving mode, makes its certificate request and
performs the switch to mTLS.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from agent.bootstrap import CertificateRequest, Identity
from agent.runtime import Runtime

INSTANCE_ID_KEY = "x-vkec2-instance-id"


class Instance:
    """What a call is routed to: one agent's instance ID and its pod runtime."""

    __slots__ = ("instance_id", "runtime")

    def __init__(self, instance_id: str, runtime: Runtime) -> None:
        self.instance_id = instance_id
        self.runtime = runtime


class Host(Protocol):
    def resolve(self, context: grpc.ServicerContext) -> Instance:
        """The instance a lifecycle call is for; aborts the call when it is not this agent's."""
        ...

    def health_target(self, context: grpc.ServicerContext) -> Instance | None:
        """The instance a health check asks about (None: the server itself)."""
        ...

    def identity(self, context: grpc.ServicerContext) -> Identity: ...

    def mode(self, context: grpc.ServicerContext | None = None) -> str:
        """insecure | bootstrap | switching | authenticated (of the instance the call names)."""
        ...

    def certificate_request(self, nonce: bytes, context: grpc.ServicerContext) -> CertificateRequest:
        """A CSR for this agent's own key with its proof of the bootstrap secret, or aborts the call."""
        ...

    def install_certificate(self, cert_pem: bytes, chain_pem: bytes, context: grpc.ServicerContext) -> str:
        """Check the fleet's certificate and switch to mTLS with it; returns the new mode or aborts."""
        ...


def metadata_instance_id(context: grpc.ServicerContext) -> str:
    """The instance ID the caller expects (``x-vkec2-instance-id``), or "" when it names none."""
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
