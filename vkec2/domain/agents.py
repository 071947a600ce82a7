"""The agent on an instance as the fleet sees it: where to reach it, and the workload status it reports.

:func:`resolve_endpoint` turns an EC2 Instance description into the agent's ``HOST:PORT`` per the
``agent.endpoint`` setting (private IP, public IP or a static address); an :class:`AgentTarget`
names that endpoint together with the instance the agent must be; an :class:`AppStatus` is a pod
status as the agent reports it, already in Kubernetes JSON shape. All of it is pure: the gRPC client
(:mod:`vkec2.agent_client.client`) produces these values and the fleet logic consumes them, so both
the real client and the in-memory fakes of the tests speak the same types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vkec2.config import AgentConnection
from vkec2.errors import AgentUnavailable, ConfigError


def resolve_endpoint(conn: AgentConnection, instance: Mapping[str, Any]) -> str:
    """``HOST:PORT`` of the agent of ``instance`` (a boto3 EC2 Instance description)."""
    mode = conn.endpoint
    if mode.startswith("static:"):
        hostport = mode[len("static:") :]
        if ":" not in hostport:
            raise ConfigError(f"agent.endpoint {mode!r} must be static:HOST:PORT")
        return hostport
    keys = {"private-ip": "PrivateIpAddress", "public-ip": "PublicIpAddress"}
    if mode not in keys:
        raise ConfigError(f"agent.endpoint must be private-ip, public-ip or static:HOST:PORT, got {mode!r}")
    address = instance.get(keys[mode])
    if not address:
        iid = instance.get("InstanceId", "?")
        raise AgentUnavailable(f"instance {iid} has no {keys[mode]} (yet): cannot reach its agent")
    host = f"[{address}]" if ":" in str(address) else str(address)
    return f"{host}:{conn.port}"


@dataclass(frozen=True)
class AgentTrust:
    """What a TLS fleet renders into a launch's user data: the fleet CA to pin and the one-time secret."""

    ca_cert_pem: str
    secret: str


@dataclass(frozen=True)
class AgentTarget:
    """The agent to call: its ``HOST:PORT`` and the instance it must be running on."""

    endpoint: str
    instance_id: str


@dataclass(frozen=True)
class SpotNotice:
    """What the agent read from the instance metadata: an interruption notice or a rebalance recommendation.

    ``kind`` is ``interruption`` (``action``: terminate, stop or hibernate, at ``time``) or
    ``rebalance`` (``time``: when EC2 noticed the elevated risk); times as EC2 wrote them.
    """

    kind: str
    action: str = ""
    time: str = ""


@dataclass(frozen=True)
class AppStatus:
    """A pod status as the agent reports it, in Kubernetes JSON shape, ready for ``pods/status``."""

    phase: str
    conditions: list[dict[str, Any]]
    container_statuses: list[dict[str, Any]]
    reason: str
    message: str
    init_container_statuses: list[dict[str, Any]] = field(default_factory=list)
    pod_ip: str = ""
    start_time: str | None = None
    pod_uid: str = ""
    spot_notice: SpotNotice | None = None  # the agent's view of the instance's Spot notices
    events: list[dict[str, Any]] = field(default_factory=list)  # recent pod events (probes), by seq
