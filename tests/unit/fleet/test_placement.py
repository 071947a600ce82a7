"""A host-pool pod's create step on the fakes: claim or allocate a host, launch on it, or wait for one."""

from __future__ import annotations

from tests.unit.fleet.world import UID, World, pod, settings
from vkec2.contract import TAG_HOST_ID, TAG_HOST_POOL
from vkec2.domain.hosts import HostRecord, allocation_token, host_request
from vkec2.domain.models import Phase
from vkec2.fleet.hosts import HostAllocator, HostPools, host_counts, host_rows, host_summary
from vkec2.observability.metrics import HostCollector

ANN = {"compute.amazonaws.com/host-pool": "macs"}
ZONES = ["us-west-2a", "us-west-2b"]


def world(max_hosts: int = 1, **pool: object) -> World:
    macs: dict[str, object] = {"name": "macs", "instance_type": "mac2.metal", "availability_zones": ZONES}
    macs["max_hosts"] = max_hosts
    w = World(settings(host_pools=[{**macs, **pool}]))
    w.seed(spec=pod(annotations=ANN))
    return w


def test_C28_a_host_is_allocated_claimed_and_the_pod_launched_on_it() -> None:
    w = world()
    w.step()
    rec = w.store.get(UID)
    assert rec is not None
    assert rec.phase is Phase.PROVISIONING, (rec.reason, rec.message)
    (host_id,) = w.ec2.he.hosts
    assert (rec.host_pool, rec.host_id) == ("macs", host_id)
    (launch,) = w.ec2.calls_of("RunInstances")
    assert launch["InstanceType"] == "mac2.metal"
    assert (launch["Tags"][TAG_HOST_POOL], launch["Tags"][TAG_HOST_ID]) == ("macs", host_id)
    (allocation,) = w.ec2.calls_of("AllocateHosts")
    assert allocation["zone"] == "us-west-2a"
    assert w.store.host_records("macs")[0].claims.keys() == {UID}


def test_insufficient_host_capacity_moves_to_the_next_zone() -> None:
    w = world()
    w.ec2.he.no_capacity.add("us-west-2a")
    w.step()
    assert [c["zone"] for c in w.ec2.calls_of("AllocateHosts")] == ["us-west-2a", "us-west-2b"]
    assert w.store.host_records("macs")[0].zone == "us-west-2b"


def test_C29_a_pod_waits_pending_when_every_host_is_taken_and_the_pool_is_at_max() -> None:
    w = world(max_hosts=1)
    w.store.put_hosts("macs", [HostRecord("h-0busy", "macs", "us-west-2a", "available", 1.0)])
    w.store.claim_host("macs", "someone-else", 1.0)
    w.ec2.he.hosts["h-0busy"] = {
        "HostId": "h-0busy",
        "AvailabilityZone": "us-west-2a",
        "State": "available",
        "AllocationTime": "2026-01-01T00:00:00+00:00",
        "Instances": [],
        "Tags": [{"Key": "vkec2.io/cluster", "Value": "unit"}, {"Key": TAG_HOST_POOL, "Value": "macs"}],
    }
    delay = w.step()
    rec = w.store.get(UID)
    assert rec is not None and rec.phase is Phase.PENDING and rec.reason == "WaitingForHost"
    assert "h-0busy occupied by someone-else" in rec.message and "(1 of max 1 hosts allocated)" in rec.message
    assert delay is not None and delay > 0
    assert not w.ec2.calls_of("RunInstances") and not w.ec2.calls_of("AllocateHosts")
    events = w.store.events("vk-unit")
    assert events[-1].event_type == "Warning" and events[-1].reason == "WaitingForHost"
    w.step()  # the same answer: no second event
    assert len(w.store.events("vk-unit")) == len(events)


def test_C30_a_pool_that_can_never_hold_the_pod_fails_it() -> None:
    w = world(max_hosts=0)
    assert w.step() is None
    rec = w.store.get(UID)
    assert rec is not None and rec.phase is Phase.FAILED and rec.reason == "HostPoolCannotFit"


def test_the_hosts_pass_rebuilds_the_mirror_and_never_allocates_past_max() -> None:
    w = world(max_hosts=1, min_hosts=1)
    report = HostPools(w.settings, w.store, w.ec2).run()
    assert len(report.allocated) == 1 and report.counts["macs"]["available"] == 1
    w.store.hs.docs.clear()  # Redis lost the mirror
    w.store.hs.claims.clear()
    w.store.hs.slots.clear()
    again = HostPools(w.settings, w.store, w.ec2).run()
    assert again.allocated == [] and again.counts["macs"]["available"] == 1
    assert len(w.ec2.he.hosts) == 1 and len(w.ec2.calls_of("AllocateHosts")) == 1
    assert w.store.hs.slots["macs"] == 1  # the allocation number is never reused


def test_the_hosts_pass_releases_an_idle_host_only_past_its_minimum_and_reports_it() -> None:
    w = world(max_hosts=1, release={"idle_seconds": 600})
    allocated = 1767225600.0  # the fake's AllocationTime
    HostPools(w.settings, w.store, w.ec2, clock=lambda: allocated).run()  # the host appears: none yet
    w.ec2.he.hosts.clear()
    w.store.hs.docs.clear()
    host_id = w.lifecycle.capacity.hosts.allocator.allocate(w.settings.host_pools[0]).host_id  # type: ignore[union-attr]
    assert host_id
    for hours, released in ((1.0, []), (23.9, []), (24.2, [host_id])):
        at = allocated + hours * 3600
        report = HostPools(w.settings, w.store, w.ec2, clock=lambda: at).run()  # noqa: B023
        assert report.released == released, hours
    assert w.ec2.calls_of("ReleaseHosts") == [{"host_ids": [host_id]}]
    assert w.store.host_records("macs") == []


def test_refused_releases_are_kept_and_reported() -> None:
    w = world(max_hosts=1, release={"idle_seconds": 0})
    host_id = w.lifecycle.capacity.hosts.allocator.allocate(w.settings.host_pools[0]).host_id  # type: ignore[union-attr]
    w.ec2.he.refuse_release[host_id] = "Client.InvalidHost.Occupied: occupied"
    report = HostPools(w.settings, w.store, w.ec2, clock=lambda: 1767225600.0 + 2 * 86400).run()
    assert report.refused == {host_id: "Client.InvalidHost.Occupied: occupied"} and not report.released
    assert [r.host_id for r in w.store.host_records("macs")] == [host_id]


def test_counts_summary_rows_and_the_gauge() -> None:
    w = world(max_hosts=1)
    w.step()  # allocates and claims a host
    at = w.store.host_records("macs")[0].allocated_at + 3600
    assert host_counts(w.settings, w.store)["macs"]["occupied"] == 1
    summary = host_summary(w.settings, w.store, at)["macs"]
    assert summary["host_hours"] == 1.0 and summary["idle"] == 0 and summary["next_releasable_in_s"] is None
    (row,) = host_rows(w.settings, w.store, at)
    assert (row["state"], row["pods"], row["releasable_in_s"]) == ("occupied", UID, 23 * 3600)
    (gauge,) = HostCollector(lambda: host_counts(w.settings, w.store)).collect()
    samples = {(s.labels["pool"], s.labels["state"]): s.value for s in gauge.samples}
    assert gauge.name == "vkec2_hosts" and samples[("macs", "occupied")] == 1


def test_an_allocation_sent_before_a_crash_is_sent_again_with_its_token() -> None:
    w = world(max_hosts=2)
    macs = w.settings.host_pools[0]
    seq = w.store.host_allocation_intent("macs")  # a step sent AllocateHosts, then died
    cluster = w.settings.cluster_name
    token = allocation_token(cluster, "macs", seq, "us-west-2a")
    first = w.ec2.allocate_host(host_request(macs, cluster, seq), "us-west-2a", token)
    del w.ec2.he.hosts[first]  # EC2 does not list it yet (eventual consistency)
    again = HostAllocator(w.settings, w.store, w.ec2).allocate(macs)
    assert again.host_id == first  # the same token: the same host, not a second one
    assert [c["token"] for c in w.ec2.calls_of("AllocateHosts")] == [token, token]
    assert w.store.host_allocation_intent("macs") == seq + 1  # recorded: the next one is new


def test_C29_no_host_capacity_in_any_zone_is_a_wait_with_aws_answer() -> None:
    w = world()
    w.ec2.he.no_capacity.update(ZONES)
    w.step()
    rec = w.store.get(UID)
    assert rec is not None and rec.phase is Phase.PENDING and rec.reason == "WaitingForHost"
    assert "us-west-2a: AllocateHosts: InsufficientHostCapacity" in rec.message
    assert "us-west-2b: AllocateHosts: InsufficientHostCapacity" in rec.message
    assert not w.ec2.calls_of("RunInstances") and w.store.host_allocation_intent("macs") == 2
