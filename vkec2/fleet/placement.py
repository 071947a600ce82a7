"""Launching a pod on a Dedicated Host of its host pool, and what the pod does while no host is free.

The create step hands a pod whose launch parameters name a host pool
(:attr:`~vkec2.domain.podspec.LaunchParams.host_pool`) to :class:`HostPlacement` instead of the
shared-tenancy capacity fallback (:class:`vkec2.fleet.capacity.CapacityLaunch` calls it). The
pod takes a slot on an available host atomically (:meth:`~vkec2.ports.HostClaims.claim_host`; the
one it already holds after a step stopped half-way), or has one allocated
(:class:`vkec2.fleet.hosts.HostAllocator`) within the pool's max and the host quota, records the
host on its record (``host_pool``, ``host_id``), and is launched with ``Placement.Tenancy=host``
and the host's ID (or the pool's host resource group), in the pool's subnet of the host's zone,
tagged with the host pool and host. Its ClientToken names the host (``vkec2-{uid}-{attempt}-{hash}``),
so a re-sent RunInstances returns the same instance. When no host is free — all busy or scrubbing,
the pool at its max or quota, no host capacity in any zone — or a host refuses the launch (EC2's
``InsufficientCapacityOnHost`` while it is still being scrubbed), nothing was launched: the pod
waits Pending with reason ``WaitingForHost``, each host's state in the message, a Warning event when
the message changes, and is polled again with a back-off. It never fails for a busy pool; it fails
(``HostPoolCannotFit``) only when the pool can never hold it (``max_hosts`` 0).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from vkec2.config import Settings
from vkec2.config.hosts import HostPool
from vkec2.contract import (
    REASON_HOST_POOL_CANNOT_FIT,
    REASON_WAITING_FOR_HOST,
    TAG_HOST_ID,
    TAG_HOST_POOL,
)
from vkec2.domain.agents import AgentTrust
from vkec2.domain.hosts import describe_wait
from vkec2.domain.instances import Instance, client_token
from vkec2.domain.models import Phase, PodRecord, now
from vkec2.domain.podspec import LaunchParams, user_data_for
from vkec2.domain.times import rfc3339
from vkec2.errors import Ec2Error
from vkec2.fleet.capacity import NoCapacity, Verdict
from vkec2.fleet.hosts import HostAllocator
from vkec2.ports import Ec2, LaunchStore, PodLock

log = logging.getLogger(__name__)

#: The first wait for a host; it grows with the time waited, up to ``celery.max_countdown_seconds``.
HOST_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class HostWait(NoCapacity):
    """No slot on a host of the pod's pool now (or ever, with ``never``): nothing was launched."""

    never: bool = False


def _variant(host_id: str) -> str:
    return hashlib.sha256(host_id.encode()).hexdigest()[:8]


class HostPlacement:
    """Places host-pool pods on their pool's Dedicated Hosts (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: LaunchStore,
        ec2: Ec2,
        trust: Callable[[str], AgentTrust] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.trust = trust
        self.allocator = HostAllocator(settings, store, ec2)

    def token(self, rec: PodRecord, host_id: str) -> str:
        """The ClientToken of this attempt's launch on ``host_id``."""
        return client_token(rec.uid, rec.attempt, _variant(host_id))

    def sent(self, rec: PodRecord) -> bool:
        """Whether this attempt sent RunInstances on its host (the record names that launch's token)."""
        return bool(rec.host_id and rec.launch_token) and rec.launch_token == self.token(rec, rec.host_id)

    def waits(self, outcome: NoCapacity) -> bool:
        return isinstance(outcome, HostWait)

    def launch(
        self,
        lock: PodLock,
        rec: PodRecord,
        params: LaunchParams,
        tags: Mapping[str, str],
        intent: Callable[[str], None],
    ) -> Instance | NoCapacity:
        pool = self.settings.host_pool(params.host_pool)
        assert pool is not None  # launch_params checked the name
        if pool.max_hosts == 0:
            message = f"host pool {pool.name!r} has max_hosts 0: no host can ever be allocated for the pod"
            return HostWait(code=REASON_HOST_POOL_CANNOT_FIT, message=message, unavailable=(), never=True)
        host_id, why = (rec.host_id, "") if rec.host_pool == pool.name else ("", "")
        if not host_id:
            host_id, why = self._claim(lock, rec, pool)
        if not host_id:
            return self._wait(pool, rec.uid, f"no host allocated ({why}); " if why else "")
        if (rec.host_id, rec.host_pool) != (host_id, pool.name):
            lock.write({"host_id": host_id, "host_pool": pool.name})
            rec.host_id, rec.host_pool = host_id, pool.name
        token = self.token(rec, host_id)
        intent(token)
        launch = self._params(pool, params, host_id, token)
        try:
            return self.ec2.run_instance(
                launch, {**tags, TAG_HOST_POOL: pool.name, TAG_HOST_ID: host_id}, token
            )
        except Ec2Error as exc:
            if not exc.capacity:
                raise
            intent("")  # refused: nothing was launched under that token
            self._refused(lock, rec, pool, host_id, exc)
            return self._wait(pool, rec.uid, f"host {host_id} refused the launch ({exc.code}); ")

    def _claim(self, lock: PodLock, rec: PodRecord, pool: HostPool) -> tuple[str, str]:
        """A slot for the pod: (host ID, ""), or ("", why no host could be allocated)."""
        lock.guard()
        host_id = self.store.claim_host(pool.name, rec.uid, now())
        if host_id:
            return host_id, ""
        allocated = self.allocator.allocate(pool)
        if not allocated.host_id:
            log.info("no host for pod %s in pool %s: %s", rec.uid, pool.name, allocated.reason)
        lock.guard()  # a host allocated, or one another pod left: take a slot
        host_id = self.store.claim_host(pool.name, rec.uid, now()) or ""
        return host_id, "" if host_id else allocated.reason

    def _refused(self, lock: PodLock, rec: PodRecord, pool: HostPool, host_id: str, exc: Ec2Error) -> None:
        """The host refused the launch (scrubbing, or full): free the slot, mark the host busy until seen."""
        self.store.drop_host_claim(pool.name, host_id, rec.uid)
        for record in self.store.host_records(pool.name):
            if record.host_id == host_id and not record.scrubbing_since:
                self.store.put_hosts(pool.name, [replace(record, scrubbing_since=now())])
        lock.write({"host_id": "", "host_pool": ""})
        rec.host_id = rec.host_pool = ""
        log.info("host %s refused pod %s: %s", host_id, rec.uid, exc.message)

    def _params(self, pool: HostPool, params: LaunchParams, host_id: str, token: str) -> LaunchParams:
        """The launch on ``host_id``: tenancy host, its zone's subnet of the pool, this token's user data."""
        zone = next((r.zone for r in self.store.host_records(pool.name) if r.host_id == host_id), "")
        subnet = params.subnet_id
        if pool.subnets:
            zones = self.ec2.subnet_zones(pool.subnets)
            subnet = next((s for s in pool.subnets if zones.get(s) == zone), pool.subnets[0])
        user_data = params.user_data
        if self.trust is not None:
            user_data = user_data_for(self.settings, params.instance_type, self.trust(token))
        return replace(
            params,
            subnet_id=subnet,
            user_data=user_data,
            host_id="" if pool.host_resource_group_arn else host_id,
            tenancy="host",
            host_resource_group_arn=pool.host_resource_group_arn or "",
        )

    def _wait(self, pool: HostPool, uid: str, prefix: str = "") -> HostWait:
        message = prefix + describe_wait(self.store.host_records(pool.name), pool, now())
        return HostWait(code=REASON_WAITING_FOR_HOST, message=message, unavailable=(pool.name,))

    def verdict(self, rec: PodRecord, outcome: NoCapacity, at: float | None = None) -> Verdict:
        """Pending (polled with a back-off) while no host is free; Failed only when none can ever be."""
        at = now() if at is None else at
        assert isinstance(outcome, HostWait)
        if outcome.never:
            return Verdict(Phase.FAILED, reason=outcome.code, message=outcome.message, delay=None, write=True)
        waiting = (
            rec.phase is Phase.PENDING and rec.reason == REASON_WAITING_FOR_HOST and rec.capacity_since > 0
        )
        since = rec.capacity_since if waiting else at
        ceiling = self.settings.celery.max_countdown_seconds
        delay = min(ceiling, HOST_POLL_SECONDS + (at - since) / 10)
        message = f"{outcome.message}; waiting since {rfc3339(since)}"
        unchanged = waiting and (rec.reason, rec.message) == (REASON_WAITING_FOR_HOST, message)
        return Verdict(
            Phase.PENDING,
            reason=REASON_WAITING_FOR_HOST,
            message=message,
            delay=delay,
            write=not unchanged,
            fields={"capacity_since": since},
        )
