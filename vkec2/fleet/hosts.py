"""The host pools' upkeep: allocating Dedicated Hosts, and the periodic pass that refreshes and releases them.

:class:`HostAllocator` allocates one host of a pool when a pod finds no free slot (or the pool is
below ``min_hosts``): under the pool's allocation lock it reads the pool's hosts from EC2
(DescribeHosts by the cluster tag, so a Redis that lost its data never leads to a second host),
refuses when the pool is at ``max_hosts`` or the family at the account's host quota
(``quotas.host_codes``, stored by the quota refresh), and sends AllocateHosts with the allocation
in flight's ClientToken (:func:`vkec2.domain.hosts.allocation_token`; a step that stopped after
sending it re-sends the same token and gets the same host) in each of the pool's zones in order,
``InsufficientHostCapacity`` moving on to the next, like the instance capacity fallback.

:class:`HostPools` is the body of ``vkec2.maintenance.hosts``: it rebuilds every pool's mirror from
DescribeHosts (the host tags name the pool and the allocation number; the instances on a host name
their pods by tag, so the claims are rebuilt too), frees the claims of pods whose instance is gone
(a Mac host then scrubs: it is not chosen until EC2 shows it available again), releases the hosts
the release policy names (:func:`vkec2.domain.hosts.to_release`: never before the minimum
allocation period; ReleaseHosts' refusals are logged and the host kept) and allocates up to
``min_hosts``. It reports counts per pool and state for the metrics, the status log and ``vkec2 hosts``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vkec2.config import Settings
from vkec2.config.hosts import HostPool
from vkec2.contract import HOST_ALLOCATION_ERROR_CODES, TAG_POD_UID
from vkec2.domain.hosts import (
    HostRecord,
    HostState,
    allocation_token,
    host_request,
    observed,
    pool_of,
    slot_of,
    tags_of,
    to_allocate,
    to_release,
    with_idleness,
)
from vkec2.domain.models import Phase, now
from vkec2.errors import Ec2Error
from vkec2.ports import Ec2, HostClaims, HostPoolStore

log = logging.getLogger(__name__)

#: A claim younger than this is never dropped: its pod is writing it into its record.
CLAIM_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Allocation:
    """What an allocation attempt came to: the new host's ID, or why there is none."""

    host_id: str = ""
    reason: str = ""  # why none: at max, at quota, no capacity in any zone, busy


def _zones(settings: Settings, ec2: Ec2, pool: HostPool) -> list[str]:
    """The pool's zones in order: its ``availability_zones``, else its subnets' zones."""
    if pool.availability_zones:
        return list(pool.availability_zones)
    zones = ec2.subnet_zones(pool.subnets)
    return list(dict.fromkeys(zones[s] for s in pool.subnets if zones.get(s)))


def sync_pool(
    store: HostClaims, pool: HostPool, described: Sequence[Mapping[str, Any]], at: float
) -> list[HostRecord]:
    """The pool's records after a DescribeHosts answer (claims kept); hosts EC2 no longer lists are left."""
    known = {r.host_id: r for r in store.host_records(pool.name)}
    mine = [d for d in described if pool_of(d) == pool.name]
    records = [observed(known.get(str(d["HostId"])), d, pool, at) for d in mine]
    store.put_hosts(pool.name, records)
    highest = max((slot_of(d) for d in mine), default=0)
    if highest:
        store.host_slot_floor(pool.name, highest)  # never reuse an allocation number (its token)
    return records


class HostAllocator:
    """Allocates one host of a pool at a time, idempotently, within its max and the host quota."""

    def __init__(self, settings: Settings, store: HostClaims, ec2: Ec2) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2

    def allocate(self, pool: HostPool) -> Allocation:
        live = sum(1 for r in self.store.host_records(pool.name) if r.live)
        if live >= pool.max_hosts:  # the mirror says so: no DescribeHosts per waiting pod and poll
            return Allocation(reason=f"max_hosts {pool.max_hosts} reached")
        with self.store.host_allocation_flight(pool.name) as held:
            if not held:
                return Allocation(reason="another worker is allocating a host of this pool")
            return self._allocate(pool)

    def _allocate(self, pool: HostPool) -> Allocation:
        described = self.ec2.cluster_hosts()
        records = sync_pool(self.store, pool, described, now())
        live = [r for r in records if r.live]
        if any(r.state is HostState.AVAILABLE for r in live):
            return Allocation(reason="a host became available")
        if len(live) >= pool.max_hosts:
            return Allocation(reason=f"max_hosts {pool.max_hosts} reached")
        quota = self.store.host_quota(pool.family)
        if quota is not None:
            family = sum(1 for d in described if _family(d) == pool.family)
            if family >= quota:
                return Allocation(reason=f"the account's quota of {quota:g} {pool.family} hosts is reached")
        seq = self.store.host_allocation_intent(pool.name)
        request = host_request(pool, self.settings.cluster_name, seq)
        refusals: list[str] = []
        for zone in _zones(self.settings, self.ec2, pool):
            token = allocation_token(self.settings.cluster_name, pool.name, seq, zone)
            try:
                host_id = self.ec2.allocate_host(request, zone, token)
            except Ec2Error as exc:
                if exc.code not in HOST_ALLOCATION_ERROR_CODES:
                    raise
                refusals.append(f"{zone}: {exc.message}")
                log.info("no host of pool %s in %s: %s", pool.name, zone, exc.message)
                continue
            self._record(pool, host_id, zone)
            self.store.clear_host_allocation_intent(pool.name)
            log.info("allocated host %s of pool %s in %s (token %s)", host_id, pool.name, zone, token)
            return Allocation(host_id=host_id)
        self.store.clear_host_allocation_intent(pool.name)  # nothing allocated under its tokens
        return Allocation(reason="; ".join(refusals) or "the pool has no zone")

    def _record(self, pool: HostPool, host_id: str, zone: str) -> None:
        """The new host in the mirror at once (EC2 may list it only a little later)."""
        at = now()
        record = HostRecord(
            host_id=host_id,
            pool=pool.name,
            zone=zone,
            ec2_state="available",
            allocated_at=at,
            slots=pool.instances_per_host,
            minimum=pool.minimum_allocation,
            seen_at=at,
        )
        self.store.put_hosts(pool.name, [record])  # idle from the first pass that sees it idle


def _family(description: Mapping[str, Any]) -> str:
    props = description.get("HostProperties") or {}
    return str(props.get("InstanceFamily") or str(props.get("InstanceType", "")).split(".", 1)[0])


@dataclass
class HostsReport:
    """One pass: hosts per pool and state, what was released, allocated, refused, freed."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    allocated: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    freed: int = 0
    skipped: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "released": self.released,
            "allocated": self.allocated,
            "refused": self.refused,
            "freed": self.freed,
            "skipped": self.skipped,
        }


class HostPools:
    """The periodic pass over every host pool (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: HostPoolStore,
        ec2: Ec2,
        clock: Callable[[], float] = now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.clock = clock
        self.allocator = HostAllocator(settings, store, ec2)

    def run(self) -> HostsReport:
        report = HostsReport()
        if not self.settings.host_pools:
            return report
        with self.store.hosts_pass_flight() as held:
            if not held:
                report.skipped = True
                return report
            described = self.ec2.cluster_hosts()
            owners = self._instance_pods(described)
            for pool in self.settings.host_pools:
                self._pass(pool, described, owners, report)
        return report

    def _instance_pods(self, described: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Instance ID -> pod UID of every instance on the cluster's hosts (their pod tags)."""
        ids = [str(i["InstanceId"]) for d in described for i in d.get("Instances", []) or []]
        if not ids:
            return {}
        found = self.ec2.describe(ids)
        return {iid: tags_of(inst).get(TAG_POD_UID, "") for iid, inst in found.items()}

    def _pass(
        self,
        pool: HostPool,
        described: Sequence[Mapping[str, Any]],
        owners: Mapping[str, str],
        report: HostsReport,
    ) -> None:
        at = self.clock()
        records = sync_pool(self.store, pool, described, at)
        listed = {r.host_id for r in records}
        gone = [r.host_id for r in self.store.host_records(pool.name) if r.host_id not in listed]
        if gone:  # released, or allocated by a step that has not been listed yet (kept if young)
            old = [
                r.host_id
                for r in self.store.host_records(pool.name)
                if r.host_id in gone and at - r.seen_at > 120
            ]
            self.store.forget_hosts(pool.name, old)
        records = [self._reconcile_claims(pool, r, owners, at) for r in records]
        releasing = to_release(records, pool, at)
        if releasing:
            refused = self.ec2.release_hosts([r.host_id for r in releasing])
            for record in releasing:
                if record.host_id in refused:
                    report.refused[record.host_id] = refused[record.host_id]
                    log.warning("ReleaseHosts refused %s: %s", record.host_id, refused[record.host_id])
                else:
                    report.released.append(record.host_id)
                    log.info(
                        "released idle host %s of pool %s (allocated %.0fs ago, idle %.0fs)",
                        record.host_id,
                        pool.name,
                        at - record.allocated_at,
                        at - record.idle_since,
                    )
            self.store.forget_hosts(
                pool.name, [h for h in (r.host_id for r in releasing) if h not in refused]
            )
        for _ in range(to_allocate(self.store.host_records(pool.name), pool)):
            outcome = self.allocator.allocate(pool)
            if not outcome.host_id:
                log.info("pool %s below min_hosts: %s", pool.name, outcome.reason)
                break
            report.allocated.append(outcome.host_id)
        counts: dict[str, int] = {state.value: 0 for state in HostState}
        for record in self.store.host_records(pool.name):
            counts[record.state.value] += 1
        report.counts[pool.name] = counts

    def _reconcile_claims(
        self, pool: HostPool, record: HostRecord, owners: Mapping[str, str], at: float
    ) -> HostRecord:
        """Claims rebuilt from the instances' pod tags; claims of pods whose instance is gone dropped."""
        claims = dict(record.claims)
        for iid in record.instances:
            uid = owners.get(iid, "")
            if uid and uid not in claims:
                claims[uid] = at  # rebuilt (Redis lost it, or a pod adopted its instance)
        freed = False
        for uid, since in list(claims.items()):
            if at - since < CLAIM_GRACE_SECONDS:
                continue
            rec = self.store.get(uid)
            on_host = rec is not None and (
                rec.host_id == record.host_id or rec.instance_id in record.instances
            )
            finished = rec is not None and (
                rec.phase is Phase.TERMINATED or (rec.phase.final and rec.released_at > 0)
            )
            if rec is None or not on_host or finished:
                del claims[uid]
                freed = True
        if claims != dict(record.claims):
            self.store.put_host_claims(pool.name, record.host_id, claims)
        raw = record.to_dict()
        if freed and pool.mac and not record.scrubbing_since and record.ec2_state == "available":
            raw["scrubbing_since"] = at  # its instance stopped or terminated: a Mac host scrubs first
        final = with_idleness(HostRecord.from_dict(raw, claims), at)
        if final.to_dict() != record.to_dict():
            self.store.put_hosts(pool.name, [final])
        return final


def host_counts(settings: Settings, store: HostClaims) -> dict[str, dict[str, int]]:
    """Pool -> host state -> hosts, from the Redis mirror (the metrics' ``vkec2_hosts``, ``vkec2 status``)."""
    out: dict[str, dict[str, int]] = {}
    for pool in settings.host_pools:
        counts = {state.value: 0 for state in HostState}
        for record in store.host_records(pool.name):
            counts[record.state.value] += 1
        out[pool.name] = counts
    return out


def host_summary(settings: Settings, store: HostClaims, at: float) -> dict[str, Any]:
    """The status log's cost-relevant view per pool: hosts by state, host-hours allocated so far, and
    how long until the first idle host may be released (the 24-hour minimum for Mac)."""
    out: dict[str, Any] = {}
    for pool in settings.host_pools:
        records = [r for r in store.host_records(pool.name) if r.live]
        idle = [r.releasable_at - at for r in records if r.idle]
        out[pool.name] = {
            "hosts": host_counts(settings, store)[pool.name],
            "host_hours": round(sum(max(0.0, at - r.allocated_at) for r in records) / 3600, 2),
            "idle": len(idle),
            "next_releasable_in_s": round(max(0.0, min(idle)), 0) if idle else None,
        }
    return out


def host_rows(settings: Settings, store: HostClaims, at: float) -> list[dict[str, Any]]:
    """One row per host of every pool, for ``vkec2 hosts``."""
    rows: list[dict[str, Any]] = []
    for pool in settings.host_pools:
        for r in store.host_records(pool.name):
            rows.append(
                {
                    "host": r.host_id,
                    "pool": pool.name,
                    "zone": r.zone,
                    "state": r.state.value,
                    "ec2_state": r.ec2_state,
                    "instances": ",".join(r.instances) or "-",
                    "pods": ",".join(sorted(r.claims)) or "-",
                    "allocated_at": r.allocated_at,
                    "allocated_for_s": round(max(0.0, at - r.allocated_at)),
                    "releasable_at": r.releasable_at,
                    "releasable_in_s": round(max(0.0, r.releasable_at - at)),
                    "idle_for_s": round(at - r.idle_since) if r.idle_since else None,
                }
            )
    return rows
