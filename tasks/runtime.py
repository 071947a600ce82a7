"""The per-process fleet context of a worker: settings, store, EC2 gateway, agent client, lifecycle.

Built lazily on first use in each process (so prefork children each get their own Redis pool,
boto3 client and gRPC channels, created after the fork) and rebuilt when the PID changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.app import app
from vkec2 import contract
from vkec2.agent_client.bootstrap import FleetBootstrap, IdentityVerifier
from vkec2.agent_client.client import AgentClient
from vkec2.ca import FleetCA
from vkec2.config import Settings, load_settings
from vkec2.domain.sealed import Sealer
from vkec2.ec2.batching import BatchingGateway
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.ec2.ratelimit import RateLimiter
from vkec2.errors import ConfigError
from vkec2.fleet.batchlaunch import BatchLaunch
from vkec2.fleet.lifecycle import Lifecycle
from vkec2.store.redis_store import Lock, Store

if TYPE_CHECKING:
    from vkec2.ports import Agents, DueStore, Ec2, LaunchStore, PodLock, PodStore

    def _adapters_satisfy_ports(
        store: Store, lock: Lock, ec2: Ec2Gateway, agents: AgentClient
    ) -> tuple[PodStore, PodLock, LaunchStore, Ec2, Agents, DueStore]:
        """Never runs: mypy proves here that each adapter satisfies its port (vkec2/ports.py)."""
        return store, lock, store, ec2, agents, store


@dataclass
class Fleet:
    settings: Settings
    store: Store
    ec2: Ec2Gateway
    agents: AgentClient
    lifecycle: Lifecycle
    limiter: RateLimiter
    bootstrap: FleetBootstrap | None = None


def kick(uids: Sequence[str]) -> None:
    """Publish a create step of each pod now (from outside its chain: it takes the chain over), as
    the sender of a launch batch does for the members it launched an instance for."""
    for uid in uids:
        app.send_task(contract.POD_CREATE, kwargs=contract.pod_task_kwargs(uid))


def build_fleet(settings: Settings) -> Fleet:
    store = Store.from_settings(settings)
    limiter = RateLimiter(store, settings.rate_limits)  # fleet-wide EC2 token buckets
    # Every attempt, retries too, draws a token; describes and terminations are coalesced fleet-wide.
    ec2 = BatchingGateway(settings, store, limiter=limiter.acquire)
    keys = settings.secrets.all_keys()
    agents = AgentClient(settings.agent, sealer=Sealer(keys) if keys else None)
    bootstrap = None
    tls = settings.agent.tls
    if tls is not None:
        if not tls.ca_key_file:
            raise ConfigError("agent.tls.ca_key_file is required on workers: they sign agent certificates")
        ca = FleetCA.load(tls.ca_cert_file, tls.ca_key_file)
        bootstrap = FleetBootstrap(agents, ca, IdentityVerifier.from_settings(settings, ec2.account_id))
    lifecycle = Lifecycle(
        settings,
        store,
        ec2,
        agents,
        bootstrap.bootstrap if bootstrap else None,
        trust=bootstrap.trust if bootstrap else None,
        tokens=limiter,
    )
    lifecycle.batches = BatchLaunch(settings, store, ec2, limiter, lifecycle.capacity, kick=kick)
    return Fleet(settings, store, ec2, agents, lifecycle, limiter, bootstrap)


_fleet: Fleet | None = None
_pid = 0
_mutex = threading.Lock()


def fleet() -> Fleet:
    """This process's fleet context, built on first use."""
    global _fleet, _pid
    if _fleet is None or _pid != os.getpid():
        with _mutex:
            if _fleet is None or _pid != os.getpid():
                _fleet = build_fleet(load_settings())
                _pid = os.getpid()
    return _fleet
