"""In-memory fakes of the Dedicated-host parts of the store and of EC2, mixed into ``tests/support/fakes.py``.

:class:`FakeHostStore` keeps each host pool's records and claims like :mod:`vkec2.store.hosts`
(the claim chooses the oldest available host with a free slot, or the one the pod already holds);
:class:`FakeHostsEc2` allocates, describes and releases hosts like EC2 with a ClientToken per
allocation, hosts in state ``available`` at once and the instances placed on them by RunInstances'
``host_id``. What they do not model: scrubbing, the 24-hour minimum and capacity answers (the
AWS-like double does, ``tests/support/hostsim.py``), pagination and tag filters beyond the cluster.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from vkec2.domain.hosts import HostRecord, HostRequest, free_hosts


class _StoreState:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, HostRecord]] = {}  # pool -> host ID -> record
        self.claims: dict[str, dict[str, dict[str, float]]] = {}  # pool -> host ID -> uid -> at
        self.slots: dict[str, int] = {}
        self.intents: dict[str, int] = {}
        self.quotas: dict[str, float] = {}
        self.flights: set[str] = set()
        self.mutex = threading.Lock()


class FakeHostStore:
    """The host pools' mirror and claims, in memory (its state made on first use: a mixin)."""

    @property
    def hs(self) -> _StoreState:
        state = self.__dict__.get("_host_state")
        if state is None:
            state = self.__dict__.setdefault("_host_state", _StoreState())
        assert isinstance(state, _StoreState)
        return state

    def host_records(self, pool: str) -> list[HostRecord]:
        with self.hs.mutex:
            docs = self.hs.docs.get(pool, {})
            claims = self.hs.claims.get(pool, {})
            return [HostRecord.from_dict(r.to_dict(), claims.get(hid, {})) for hid, r in sorted(docs.items())]

    def put_hosts(self, pool: str, records: Iterable[HostRecord]) -> None:
        with self.hs.mutex:
            for record in records:
                self.hs.docs.setdefault(pool, {})[record.host_id] = record

    def forget_hosts(self, pool: str, host_ids: Iterable[str]) -> None:
        with self.hs.mutex:
            for host_id in host_ids:
                self.hs.docs.get(pool, {}).pop(host_id, None)
                self.hs.claims.get(pool, {}).pop(host_id, None)

    def claim_host(self, pool: str, uid: str, now: float) -> str | None:
        with self.hs.mutex:
            claims = self.hs.claims.setdefault(pool, {})
            held = next((hid for hid, c in claims.items() if uid in c), None)
            if held is not None:
                return held
            records = [
                HostRecord.from_dict(r.to_dict(), claims.get(hid, {}))
                for hid, r in self.hs.docs.get(pool, {}).items()
            ]
            free = [r for r in free_hosts(records) if not r.scrubbing_since]
            if not free:
                return None
            claims.setdefault(free[0].host_id, {})[uid] = now
            return free[0].host_id

    def put_host_claims(self, pool: str, host_id: str, claims: Mapping[str, float]) -> None:
        with self.hs.mutex:
            if claims:
                self.hs.claims.setdefault(pool, {})[host_id] = dict(claims)
            else:
                self.hs.claims.get(pool, {}).pop(host_id, None)

    def drop_host_claim(self, pool: str, host_id: str, uid: str) -> bool:
        with self.hs.mutex:
            held = self.hs.claims.get(pool, {}).get(host_id, {})
            return held.pop(uid, None) is not None

    def host_allocation_intent(self, pool: str) -> int:
        with self.hs.mutex:
            if pool not in self.hs.intents:
                self.hs.slots[pool] = self.hs.slots.get(pool, 0) + 1
                self.hs.intents[pool] = self.hs.slots[pool]
            return self.hs.intents[pool]

    def clear_host_allocation_intent(self, pool: str) -> None:
        self.hs.intents.pop(pool, None)

    def host_slot_floor(self, pool: str, highest_seen: int) -> int:
        self.hs.slots[pool] = max(self.hs.slots.get(pool, 0), highest_seen)
        return self.hs.slots[pool]

    @contextmanager
    def host_allocation_flight(self, pool: str, ttl_ms: int = 60_000) -> Iterator[bool]:
        with self._flight(f"allocate:{pool}") as held:
            yield held

    @contextmanager
    def hosts_pass_flight(self, ttl_ms: int = 120_000) -> Iterator[bool]:
        with self._flight("pass") as held:
            yield held

    @contextmanager
    def _flight(self, name: str) -> Iterator[bool]:
        with self.hs.mutex:
            held = name not in self.hs.flights
            self.hs.flights.add(name)
        try:
            yield held
        finally:
            if held:
                self.hs.flights.discard(name)

    def host_quota(self, family: str) -> float | None:
        return self.hs.quotas.get(family)


class _Ec2State:
    def __init__(self) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}  # ClientToken -> host ID
        self.no_capacity: set[str] = set()  # zones answering InsufficientHostCapacity
        self.refuse_release: dict[str, str] = {}  # host ID -> "code: message"
        self.ids = itertools.count(1)


class FakeHostsEc2:
    """Dedicated hosts of one cluster as EC2 would answer for them (no scrubbing, no minimum)."""

    @property
    def he(self) -> _Ec2State:
        state = self.__dict__.get("_hosts_ec2")
        if state is None:
            state = self.__dict__.setdefault("_hosts_ec2", _Ec2State())
        assert isinstance(state, _Ec2State)
        return state

    def allocate_host(self, request: HostRequest, zone: str, token: str) -> str:
        from vkec2.errors import Ec2Error

        self._call("AllocateHosts", zone=zone, token=token)  # type: ignore[attr-defined]
        if token in self.he.tokens:
            return self.he.tokens[token]
        if zone in self.he.no_capacity:
            raise Ec2Error(
                f"AllocateHosts: InsufficientHostCapacity in {zone}",
                code="InsufficientHostCapacity",
                capacity=True,
            )
        host_id = f"h-{next(self.he.ids):017x}"
        self.he.hosts[host_id] = {
            "HostId": host_id,
            "AvailabilityZone": zone,
            "State": "available",
            "AllocationTime": "2026-01-01T00:00:00+00:00",
            "Instances": [],
            "HostProperties": {"InstanceType": request.instance_type or ""},
            "Tags": [{"Key": k, "Value": v} for k, v in request.tags],
        }
        self.he.tokens[token] = host_id
        return host_id

    def place(self, host_id: str, instance_id: str) -> None:
        self.he.hosts[host_id]["Instances"].append({"InstanceId": instance_id})

    def cluster_hosts(self) -> list[dict[str, Any]]:
        self._call("DescribeHosts")  # type: ignore[attr-defined]
        return [dict(h) for h in self.he.hosts.values() if h["State"] != "released"]

    def release_hosts(self, host_ids: Sequence[str]) -> dict[str, str]:
        self._call("ReleaseHosts", host_ids=list(host_ids))  # type: ignore[attr-defined]
        refused = {h: self.he.refuse_release[h] for h in host_ids if h in self.he.refuse_release}
        for host_id in host_ids:
            if host_id not in refused:
                self.he.hosts[host_id]["State"] = "released"
        return refused
