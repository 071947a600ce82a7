"""Dedicated hosts as the fleet sees them: the host record, its state machine and the release rules.

A :class:`HostRecord` is one Dedicated Host of a host pool (:class:`vkec2.config.hosts.HostPool`)
as EC2 last described it (``State``, the instances on it, ``AllocationTime``) plus what the fleet
knows sooner than EC2 shows it: the pods holding a slot on it (``claims``, taken atomically by
the store) and whether it is being scrubbed. Its :attr:`~HostRecord.state` is one of
:class:`HostState`: ``available`` (a free slot) → ``occupied`` (every slot claimed or running an
instance) → ``scrubbing`` (EC2 ``pending``: a Mac host is scrubbed after its instance stops or
terminates, up to about two hours) → ``available``; ``released`` at the end; ``unusable`` while
EC2 assesses or has failed it (``under-assessment``, ``permanent-failure``). Only an
``available`` host is ever chosen. :func:`transition` is the table of the fleet's own events;
:func:`observed` merges a DescribeHosts answer. :func:`releasable` and :func:`to_release` are the
release policy: never before the minimum allocation period (24 h for Mac, AWS's own rule), then
after ``release.idle_seconds`` of idleness, keeping ``release.keep_warm`` idle hosts and
``min_hosts`` hosts in all. Everything here is pure: times are passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from vkec2.config.hosts import ON_HOSTS_ONLY, HostPool, is_mac
from vkec2.contract import (
    ON_DEMAND,
    REASON_HOST_POOL_CANNOT_FIT,
    REASON_HOST_POOL_REQUIRED,
    REASON_UNKNOWN_HOST_POOL,
    TAG_CLUSTER,
    TAG_HOST_POOL,
    TAG_HOST_SLOT,
)
from vkec2.domain.times import rfc3339
from vkec2.errors import InvalidPodSpec


class HostState(StrEnum):
    """The fleet's view of a host (EC2's ``State`` and the slots in use)."""

    AVAILABLE = "available"
    OCCUPIED = "occupied"
    SCRUBBING = "scrubbing"
    UNUSABLE = "unusable"
    RELEASED = "released"


class HostEvent(StrEnum):
    """What happens to a host that the fleet itself does or sees."""

    CLAIMED = "claimed"  # a pod took the last free slot
    INSTANCE_GONE = "instance-gone"  # a pod's instance on it stopped or terminated
    SCRUBBED = "scrubbed"  # EC2 shows it available again
    RELEASED = "released"  # ReleaseHosts succeeded
    FAILED = "failed"  # EC2 shows it under-assessment or permanent-failure


#: EC2's host states (``Host.State``).
EC2_AVAILABLE = "available"
EC2_PENDING = "pending"
EC2_UNDER_ASSESSMENT = "under-assessment"
EC2_PERMANENT_FAILURE = "permanent-failure"
EC2_RELEASED = "released"
EC2_RELEASED_FAILED = "released-permanent-failure"
#: The host states DescribeHosts answers for hosts that are still allocated.
EC2_LIVE_STATES = (EC2_AVAILABLE, EC2_PENDING, EC2_UNDER_ASSESSMENT, EC2_PERMANENT_FAILURE)

#: (state, event) -> the next state. Events not listed for a state leave it unchanged.
TRANSITIONS: Mapping[tuple[HostState, HostEvent], HostState] = {
    (HostState.AVAILABLE, HostEvent.CLAIMED): HostState.OCCUPIED,
    (HostState.AVAILABLE, HostEvent.RELEASED): HostState.RELEASED,
    (HostState.AVAILABLE, HostEvent.FAILED): HostState.UNUSABLE,
    (HostState.OCCUPIED, HostEvent.INSTANCE_GONE): HostState.SCRUBBING,
    (HostState.OCCUPIED, HostEvent.FAILED): HostState.UNUSABLE,
    (HostState.SCRUBBING, HostEvent.SCRUBBED): HostState.AVAILABLE,
    (HostState.SCRUBBING, HostEvent.FAILED): HostState.UNUSABLE,
    (HostState.UNUSABLE, HostEvent.SCRUBBED): HostState.AVAILABLE,
    (HostState.UNUSABLE, HostEvent.RELEASED): HostState.RELEASED,
}


def transition(state: HostState, event: HostEvent) -> HostState:
    """The host's next state after ``event`` (unchanged when the event means nothing in ``state``)."""
    return TRANSITIONS.get((state, event), state)


def from_ec2_state(ec2_state: str) -> HostState | None:
    """The state EC2's own ``State`` settles (None for ``available``: the slots decide)."""
    if ec2_state == EC2_PENDING:
        return HostState.SCRUBBING
    if ec2_state in (EC2_UNDER_ASSESSMENT, EC2_PERMANENT_FAILURE):
        return HostState.UNUSABLE
    if ec2_state in (EC2_RELEASED, EC2_RELEASED_FAILED):
        return HostState.RELEASED
    return None


@dataclass(frozen=True)
class HostRecord:
    """One Dedicated Host of a pool: EC2's description and the fleet's claims on it."""

    host_id: str
    pool: str
    zone: str
    ec2_state: str
    allocated_at: float  # EC2's AllocationTime (epoch seconds)
    slots: int = 1
    instances: tuple[str, ...] = ()  # instance IDs EC2 (or the fleet, at launch) places on it
    claims: Mapping[str, float] = field(default_factory=dict)  # pod UID -> when it claimed a slot
    scrubbing_since: float = 0.0  # the fleet saw its instance go (EC2 may not show pending yet)
    idle_since: float = 0.0  # when it was last seen without instance or claim (0: busy)
    minimum: float = 0.0  # the pool's minimum allocation period (seconds)
    seen_at: float = 0.0  # when EC2 last described it

    @property
    def used(self) -> int:
        """Slots in use: every claim holds one, and an instance with no claim of ours holds one too."""
        return max(len(self.claims), len(self.instances))

    @property
    def state(self) -> HostState:
        settled = from_ec2_state(self.ec2_state)
        if settled is not None:
            return settled
        if self.scrubbing_since and not self.claims:
            return HostState.SCRUBBING
        return HostState.OCCUPIED if self.used >= self.slots else HostState.AVAILABLE

    @property
    def live(self) -> bool:
        """Still allocated (counts against the pool's max and the account's host quota)."""
        return self.state is not HostState.RELEASED

    @property
    def releasable_at(self) -> float:
        """When the minimum allocation period ends: before it the host is never released."""
        return self.allocated_at + self.minimum

    @property
    def idle(self) -> bool:
        return self.state is HostState.AVAILABLE and self.used == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "pool": self.pool,
            "zone": self.zone,
            "ec2_state": self.ec2_state,
            "allocated_at": self.allocated_at,
            "slots": self.slots,
            "instances": list(self.instances),
            "scrubbing_since": self.scrubbing_since,
            "idle_since": self.idle_since,
            "minimum": self.minimum,
            "seen_at": self.seen_at,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], claims: Mapping[str, float] | None = None) -> HostRecord:
        return cls(
            host_id=str(raw["host_id"]),
            pool=str(raw.get("pool", "")),
            zone=str(raw.get("zone", "")),
            ec2_state=str(raw.get("ec2_state", EC2_AVAILABLE)),
            allocated_at=float(raw.get("allocated_at", 0.0)),
            slots=int(raw.get("slots", 1)),
            instances=tuple(str(i) for i in raw.get("instances", ())),
            claims=dict(claims or {}),
            scrubbing_since=float(raw.get("scrubbing_since", 0.0)),
            idle_since=float(raw.get("idle_since", 0.0)),
            minimum=float(raw.get("minimum", 0.0)),
            seen_at=float(raw.get("seen_at", 0.0)),
        )


def epoch(value: Any) -> float:
    """EC2's AllocationTime (a datetime, or its ISO text once stored as JSON) in epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


def tags_of(description: Mapping[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value")) for t in description.get("Tags", []) or []}


def pool_of(description: Mapping[str, Any]) -> str:
    """The host pool a DescribeHosts entry belongs to, by its tag ("" when untagged)."""
    return tags_of(description).get(TAG_HOST_POOL, "")


def observed(
    previous: HostRecord | None, description: Mapping[str, Any], pool: HostPool, now: float
) -> HostRecord:
    """The record after a DescribeHosts answer: EC2's state and instances, the fleet's claims kept.

    A host the fleet saw lose its instance stays ``scrubbing`` until EC2 shows it ``available``
    with no instance; one EC2 shows ``pending`` is scrubbing whatever the fleet saw. Idleness
    starts the first time it is seen without instance or claim.
    """
    instances = tuple(str(i.get("InstanceId")) for i in description.get("Instances", []) or [])
    ec2_state = str(description.get("State", EC2_AVAILABLE))
    claims = dict(previous.claims) if previous is not None else {}
    scrubbing = previous.scrubbing_since if previous is not None else 0.0
    if ec2_state == EC2_PENDING:
        scrubbing = scrubbing or now
    elif ec2_state == EC2_AVAILABLE and not instances:
        scrubbing = 0.0
    record = HostRecord(
        host_id=str(description["HostId"]),
        pool=pool.name,
        zone=str(description.get("AvailabilityZone", "")),
        ec2_state=ec2_state,
        allocated_at=epoch(description.get("AllocationTime")),
        slots=pool.instances_per_host,
        instances=instances,
        claims=claims,
        scrubbing_since=scrubbing,
        idle_since=previous.idle_since if previous is not None else 0.0,
        minimum=pool.minimum_allocation,
        seen_at=now,
    )
    return with_idleness(record, now)


def with_idleness(record: HostRecord, now: float) -> HostRecord:
    """``idle_since`` set when the host is idle (kept if it already was), cleared when it is not."""
    if record.idle:
        return record if record.idle_since else replace(record, idle_since=now)
    return replace(record, idle_since=0.0) if record.idle_since else record


def releasable(record: HostRecord, pool: HostPool, now: float) -> bool:
    """Idle, past its minimum allocation period and idle for ``release.idle_seconds``."""
    if not record.idle or now < record.releasable_at:
        return False
    return now - record.idle_since >= pool.release.idle_seconds


def to_release(records: Sequence[HostRecord], pool: HostPool, now: float) -> list[HostRecord]:
    """The hosts to release now: releasable ones beyond ``keep_warm`` idle and ``min_hosts`` live hosts.

    The hosts kept are the ones allocated last (each is billed the same per second once past its
    minimum; the newest stays allocated longest anyway).
    """
    live = [r for r in records if r.live]
    idle = [r for r in live if r.idle]
    candidates = sorted((r for r in idle if releasable(r, pool, now)), key=lambda r: r.allocated_at)
    spare = min(len(idle) - pool.release.keep_warm, len(live) - pool.min_hosts)
    return candidates[: max(0, spare)]


def to_allocate(records: Iterable[HostRecord], pool: HostPool) -> int:
    """How many hosts to allocate so that the pool has at least ``min_hosts`` live ones."""
    return max(0, pool.min_hosts - sum(1 for r in records if r.live))


def free_hosts(records: Iterable[HostRecord]) -> list[HostRecord]:
    """The hosts a pod may be placed on now (``available`` with a free slot), oldest first."""
    return sorted((r for r in records if r.state is HostState.AVAILABLE), key=lambda r: r.allocated_at)


def describe_wait(records: Sequence[HostRecord], pool: HostPool, now: float) -> str:
    """Why a pod of ``pool`` waits: each host's state, and what ends the wait."""
    if not records:
        return f"host pool {pool.name!r} has no host"
    parts = []
    for r in sorted(records, key=lambda r: r.host_id):
        what = r.state.value
        if r.state is HostState.SCRUBBING and r.scrubbing_since:
            what += f" since {rfc3339(r.scrubbing_since)} (takes up to {pool.expected_scrub_seconds:.0f}s)"
        elif r.state is HostState.OCCUPIED and r.claims:
            what += " by " + ", ".join(sorted(r.claims))
        parts.append(f"{r.host_id} {what}")
    live = sum(1 for r in records if r.live)
    return f"host pool {pool.name!r}: {'; '.join(parts)} ({live} of max {pool.max_hosts} hosts allocated)"


def refuse_spot_on_hosts(host_pool: str, capacity_type: str) -> None:
    """A pod on a host pool launches on-demand: any other capacity type is ``HostPoolCannotFit``."""
    if host_pool and capacity_type != ON_DEMAND:
        raise InvalidPodSpec(
            f"capacity type {capacity_type} cannot launch on host pool {host_pool!r}: {ON_HOSTS_ONLY}",
            reason=REASON_HOST_POOL_CANNOT_FIT,
        )


def host_pool_for(
    pools: Sequence[HostPool], named: str | None, inherited: str | None, instance_type: str, where: str
) -> HostPool | None:
    """The host pool a pod launches on: the one it names (``named``), else the one its parameters
    inherit (``ec2.host_pool`` or its warm pool's); None for a shared-tenancy launch.

    Raises :class:`~vkec2.errors.InvalidPodSpec`: an unknown pool (``UnknownHostPool``), an
    instance type its hosts cannot run (``HostPoolCannotFit``) or a Mac type without a host pool
    (``HostPoolRequired``: AWS runs Mac instances only on Dedicated Hosts). ``where`` names the
    annotation for the messages.
    """
    name = named or inherited
    if name is None:
        if is_mac(instance_type):
            raise InvalidPodSpec(
                f"{instance_type} runs only on a Dedicated Host: name a host pool with the annotation "
                f"{where} (or set host_pool on ec2 or the warm pool); configured host pools: "
                f"{', '.join(p.name for p in pools) or 'none'}",
                reason=REASON_HOST_POOL_REQUIRED,
            )
        return None
    pool = next((p for p in pools if p.name == name), None)
    if pool is None:
        raise InvalidPodSpec(
            f"annotation {where}: no host pool named {name!r} "
            f"(configured: {', '.join(p.name for p in pools) or 'none'})",
            reason=REASON_UNKNOWN_HOST_POOL,
        )
    if not pool.fits(instance_type):
        raise InvalidPodSpec(
            f"instance type {instance_type} does not run on the hosts of host pool {name!r} "
            f"({pool.instance_type or pool.instance_family})",
            reason=REASON_HOST_POOL_CANNOT_FIT,
        )
    return pool


@dataclass(frozen=True)
class HostRequest:
    """What one AllocateHosts asks for (the zone and ClientToken aside): one host of a pool."""

    instance_type: str | None
    instance_family: str | None
    auto_placement: bool
    host_recovery: bool
    tags: tuple[tuple[str, str], ...]  # the pool's tags, the cluster's, the pool and the sequence


def host_request(pool: HostPool, cluster: str, seq: int) -> HostRequest:
    """The request of allocation number ``seq`` of ``pool``, tagged so that EC2 remembers whose it is."""
    tags = {**pool.tags, TAG_CLUSTER: cluster, TAG_HOST_POOL: pool.name, TAG_HOST_SLOT: str(seq)}
    return HostRequest(
        instance_type=pool.instance_type,
        instance_family=pool.instance_family,
        auto_placement=pool.auto_placement,
        host_recovery=pool.host_recovery,
        tags=tuple(sorted(tags.items())),
    )


def allocation_token(cluster: str, pool: str, seq: int, zone: str) -> str:
    """The ClientToken of allocation ``seq`` of a pool in ``zone``: a retry never makes a second host.

    Each zone has its own token (EC2 refuses a token reused with other parameters); at most 64
    ASCII characters.
    """
    token = f"vkec2-{cluster}-{pool}-{seq}-{zone}"
    if len(token) > 64:
        token = "vkec2-h-" + hashlib.sha256(token.encode()).hexdigest()[:56]
    return token


def slot_of(description: Mapping[str, Any]) -> int:
    """The allocation number a host was tagged with (0 when untagged or unreadable)."""
    raw = tags_of(description).get(TAG_HOST_SLOT, "")
    return int(raw) if raw.isdigit() else 0
