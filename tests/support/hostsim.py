"""Dedicated hosts in the EC2 double: what AWS does with a Mac host that moto does not, on a faster clock.

moto implements AllocateHosts, DescribeHosts, ModifyHosts and ReleaseHosts and records
``Placement.HostId`` on an instance, but a host there is always ``available``, takes any number of
instances, lists none of them, can be released at once and ignores ``ClientToken`` and tag filters.
:class:`HostSim` (given to :class:`tests.support.ec2proxy.Ec2Proxy` as ``hosts``) adds, per AWS's
documentation: AllocateHosts idempotent by ``ClientToken`` (the same token answers the same hosts,
with other parameters ``IdempotentParameterMismatch``) and refused with ``InsufficientHostCapacity``
in the zones a test lists (:attr:`HostSim.no_capacity`); DescribeHosts filtered by ``tag:`` and
``state`` (moto answers a tag filter with nothing), listing the instances on each host, showing a
Mac host ``pending`` while it is scrubbed — from TerminateInstances of its instance until
``shutting_down_seconds`` (the instance's) plus :attr:`HostSim.scrub_seconds` later — and its
``AllocationTime`` as seen after the clock was advanced; RunInstances on a scrubbing Mac host, or on
one that already runs an instance (one Mac instance per host), refused with
``InsufficientCapacityOnHost``; ReleaseHosts of a Mac host younger than 24 hours, or of a host with an
instance, answered in ``Unsuccessful`` with AWS's message (the others released by moto); the codes
(``Client.InvalidHost.MinimumAllocation``, ``Client.InvalidHost.Occupied``) are stand-ins: AWS does
not document them, and the fleet reads only the fact of the refusal.

The clock: :meth:`HostSim.advance` moves the double's time forward, as if that much time had passed
for its hosts: their allocation times move back by it (so the fleet, reading ``AllocationTime``
with its own clock, sees them older), the 24-hour minimum is counted on it, and a scrub ends when
the advanced clock passes its end. Real time runs on underneath. :attr:`HostSim.requests` keeps
the parameters of every RunInstances and AllocateHosts the double answered, so a test can check
what reached the endpoint.

What it does not model: ``available`` capacity per instance size on non-Mac hosts (any number of
instances fits), ``AvailableCapacity``, auto-placement, host recovery and maintenance events,
``under-assessment`` and ``permanent-failure``, host resource groups and License Manager, the host
quota (``HostLimitExceeded``), stop/start of a Mac instance (its ~15 minutes in ``stopping``),
released hosts dropping out of DescribeHosts, ModifyHosts beyond moto's, pagination of DescribeHosts,
and the firmware-update scrubs that take longer.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from tests.support import ec2wire as wire
from tests.support.awslike import error_body

#: AWS's minimum allocation period of a Mac host.
MAC_MINIMUM_SECONDS = 86400.0
ON_HOST = "InsufficientCapacityOnHost"


@dataclass
class SimHost:
    host_id: str
    zone: str
    kind: str  # instance type or family
    allocated_at: float  # on the double's clock
    instances: set[str] = field(default_factory=set)
    scrub_until: float = 0.0  # the double's clock

    @property
    def mac(self) -> bool:
        return self.kind.startswith("mac")


def _fingerprint(params: wire.Params) -> str:
    kept = sorted((k, v) for k, v in params.items() if k != "ClientToken")
    return hashlib.sha256(repr(kept).encode()).hexdigest()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HostSim:
    """The host behaviour of the double (see the module docstring)."""

    def __init__(
        self, scrub_seconds: float = 30.0, shutting_down_seconds: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.scrub_seconds = scrub_seconds
        self.shutting_down = shutting_down_seconds
        self.no_capacity: set[str] = set()  # zones answering InsufficientHostCapacity
        self.hosts: dict[str, SimHost] = {}
        self.tokens: dict[str, tuple[str, bytes]] = {}  # ClientToken -> (fingerprint, answer)
        self.requests: list[tuple[str, wire.Params]] = []  # (action, parameters) answered
        self.offset = 0.0
        self._lock = threading.Lock()

    # -- the clock -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the hosts (allocation ages, the 24-hour minimum, scrubs)."""
        with self._lock:
            self.offset += seconds

    def scrubbing(self, host_id: str) -> bool:
        host = self.hosts.get(host_id)
        return host is not None and self.now() < host.scrub_until

    # -- before moto -----------------------------------------------------------------------------

    def before(self, action: str, params: wire.Params) -> tuple[int, bytes] | None:
        """An answer given instead of moto's (a refusal, a replayed token), or None to forward."""
        if action == "AllocateHosts":
            token = wire.first(params, "ClientToken")
            with self._lock:
                seen = self.tokens.get(token) if token else None
            if seen is not None:
                if seen[0] != _fingerprint(params):
                    return 400, error_body(
                        "IdempotentParameterMismatch",
                        "The client token has already been used with different parameters.",
                    )
                return 200, seen[1]
            zone = wire.first(params, "AvailabilityZone")
            if zone in self.no_capacity:
                kind = wire.first(params, "InstanceType") or wire.first(params, "InstanceFamily")
                return 500, error_body(
                    "InsufficientHostCapacity",
                    f"There is not enough capacity to fulfill your Dedicated Host request for {kind} "
                    f"in {zone}.",
                )
        if action == "RunInstances":
            host_id = wire.first(params, "Placement.HostId")
            host = self.hosts.get(host_id)
            if host is not None and host.mac and (self.scrubbing(host_id) or host.instances):
                why = "is being scrubbed (pending)" if self.scrubbing(host_id) else "already runs an instance"
                return 500, error_body(
                    ON_HOST, f"Dedicated Host {host_id} has no available capacity: it {why}."
                )
        return None

    def forwarded(self, action: str, params: wire.Params) -> wire.Params:
        """The request moto gets: DescribeHosts without the tag and state filters (applied here)."""
        if action != "DescribeHosts":
            return params
        return {k: v for k, v in params.items() if not k.startswith("Filter.")}

    def refused_releases(self, params: wire.Params) -> tuple[list[str], dict[str, tuple[str, str]]]:
        """ReleaseHosts split: the hosts moto may release, and the ones AWS refuses (code, message)."""
        ids = [v for k, vs in params.items() if k.startswith("HostId") for v in vs]
        allowed: list[str] = []
        refused: dict[str, tuple[str, str]] = {}
        for host_id in ids:
            host = self.hosts.get(host_id)
            if host is not None and host.instances:
                refused[host_id] = (
                    "Client.InvalidHost.Occupied",
                    f"Dedicated host '{host_id}' cannot be released as it is occupied",
                )
            elif host is not None and host.mac and self.now() < host.allocated_at + MAC_MINIMUM_SECONDS:
                after = _iso(host.allocated_at + MAC_MINIMUM_SECONDS - self.offset)
                refused[host_id] = (
                    "Client.InvalidHost.MinimumAllocation",
                    f"Unable to release Dedicated Host {host_id}. {host.kind} hosts must be allocated to "
                    f"your AWS account for at least 24 hour(s). You can release this host any time after "
                    f"{after}.",
                )
            else:
                allowed.append(host_id)
        return allowed, refused

    # -- after moto ----------------------------------------------------------------------------------

    def after(self, action: str, params: wire.Params, payload: bytes) -> bytes:
        """moto's successful answer as AWS would give it; the double's records updated."""
        if action in ("RunInstances", "AllocateHosts"):
            with self._lock:
                self.requests.append((action, params))
        if action == "AllocateHosts":
            return self._allocated(params, payload)
        if action == "RunInstances":
            host = self.hosts.get(wire.first(params, "Placement.HostId"))
            if host is not None:
                with self._lock:
                    host.instances.update(wire.Answer(payload).instance_ids("instancesSet"))
            return payload
        if action == "TerminateInstances":
            ids = set(wire.Answer(payload).instance_ids("instancesSet"))
            with self._lock:
                for host in self.hosts.values():
                    if host.instances & ids:
                        host.instances -= ids
                        if host.mac:
                            host.scrub_until = self.now() + self.shutting_down() + self.scrub_seconds
            return payload
        if action == "DescribeHosts":
            return self._described(params, payload)
        return payload

    def _allocated(self, params: wire.Params, payload: bytes) -> bytes:
        doc = wire.Answer(payload)
        ids = [el.text or "" for el in doc.root.iterfind(doc.q("hostIdSet/item"))]
        kind = wire.first(params, "InstanceType") or wire.first(params, "InstanceFamily")
        zone = wire.first(params, "AvailabilityZone")
        with self._lock:
            for host_id in ids:
                self.hosts[host_id] = SimHost(host_id, zone, kind, self.now())
            token = wire.first(params, "ClientToken")
            if token:
                self.tokens.setdefault(token, (_fingerprint(params), payload))
        return payload

    def _described(self, params: wire.Params, payload: bytes) -> bytes:
        filters: dict[str, set[str]] = {}
        for key, values in params.items():
            if key.startswith("Filter.") and key.endswith(".Name"):
                number = key.split(".")[1]
                filters[values[0]] = {
                    v for k, vs in params.items() if k.startswith(f"Filter.{number}.Value") for v in vs
                }
        doc = wire.Answer(payload)
        container = doc.root.find(doc.q("hostSet"))
        if container is None:
            return payload
        for item in list(container.iterfind(doc.q("item"))):
            host_id = item.findtext(doc.q("hostId")) or ""
            host = self.hosts.get(host_id)
            state_el = item.find(doc.q("state"))
            if (
                host is not None
                and state_el is not None
                and state_el.text == "available"
                and self.scrubbing(host_id)
            ):
                state_el.text = "pending"
            if host is not None:
                at = item.find(doc.q("allocationTime"))
                if at is not None:
                    at.text = _iso(host.allocated_at - self.offset)
                instances = ElementTree.SubElement(item, doc.q("instances"))
                for iid in sorted(host.instances):
                    entry = ElementTree.SubElement(instances, doc.q("item"))
                    ElementTree.SubElement(entry, doc.q("instanceId")).text = iid
                    ElementTree.SubElement(entry, doc.q("instanceType")).text = host.kind
            tags = {
                t.findtext(doc.q("key")) or "": t.findtext(doc.q("value")) or ""
                for t in item.iterfind(doc.q("tagSet/item"))
            }
            state = state_el.text if state_el is not None else ""
            keep = True
            for name, wanted in filters.items():
                if name.startswith("tag:"):
                    keep = keep and tags.get(name[4:]) in wanted
                elif name == "state":
                    keep = keep and state in wanted
                elif name == "availability-zone":
                    keep = keep and (item.findtext(doc.q("availabilityZone")) or "") in wanted
            if not keep:
                container.remove(item)
        return doc.dump()


def release_answer(successful: list[str], refused: dict[str, tuple[str, str]]) -> bytes:
    """AWS's ReleaseHostsResponse with both lists."""
    ok = "".join(f"<item>{h}</item>" for h in successful)
    bad = "".join(
        f"<item><error><code>{code}</code><message>{escape(message)}</message></error>"
        f"<resourceId>{h}</resourceId></item>"
        for h, (code, message) in refused.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ReleaseHostsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>{uuid.uuid4()}</requestId><successful>{ok}</successful>"
        f"<unsuccessful>{bad}</unsuccessful></ReleaseHostsResponse>"
    ).encode()


def released_ids(payload: bytes) -> list[str]:
    """The host IDs of moto's ReleaseHosts ``successful`` list."""
    doc = wire.Answer(payload)
    return [el.text or "" for el in doc.root.iterfind(doc.q("successful/item"))]
