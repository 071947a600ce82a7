"""Mac pods on a Dedicated-host pool, end to end through the AWS-like double and its host behaviour.

A real worker fleet (Celery workers and beat) runs ``mac2.metal`` pods of a host pool of at most
two hosts against the double (:data:`~tests.support.awslike.AWS_LIKE` plus
:class:`~tests.support.hostsim.HostSim`: one instance per Mac host, scrubbing after it, the 24-hour
minimum, an accelerated clock). What is checked at the endpoint: the AllocateHosts and RunInstances
the double received (``Placement.Tenancy=host`` and the host's ID), moto's own record of each
instance's host, and that no host is ever released before 24 hours nor allocated twice — also after
the whole fleet restarts with its Redis data gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import boto3

from tests.support.awslike import AWS_LIKE
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from tests.support.hostsim import HostSim
from tests.support.services import wait_until
from vkec2.contract import HOSTS
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
ANN = {"compute.amazonaws.com/host-pool": "macs"}
SCRUB = 8.0
DAY = 86400.0


def mac_fleet(make_fleet: Make, ec2_proxy: Ec2Proxy, **pool: Any) -> tuple[FleetHarness, HostSim]:
    sim = HostSim(scrub_seconds=SCRUB, shutting_down_seconds=lambda: ec2_proxy.aws.shutting_down_seconds)
    ec2_proxy.hosts = sim
    macs = {
        "name": "macs",
        "instance_type": "mac2.metal",
        "availability_zones": ["us-west-2a", "us-west-2b"],
        "max_hosts": 2,
        "release": {"idle_seconds": 0},
        **pool,
    }
    fleet = make_fleet(
        aws_like=AWS_LIKE,
        host_pools=[macs],
        beat={"hosts_interval_seconds": 1},
        agent={"finished_keepalive_seconds": 0},
    )
    fleet.start_beat()
    fleet.start_worker(concurrency=4)
    return fleet, sim


def requests(sim: HostSim, action: str) -> list[dict[str, str]]:
    return [{k: v[0] for k, v in p.items()} for a, p in sim.requests if a == action]


def hosts_in_moto(proxy: Ec2Proxy) -> dict[str, str]:
    """Host ID -> state, as moto records them (not through the double: never pending)."""
    ec2 = boto3.client("ec2", endpoint_url=proxy.upstream, region_name="us-west-2")
    return {h["HostId"]: h["State"] for h in ec2.describe_hosts()["Hosts"]}


def placement_in_moto(fleet: FleetHarness, instance_id: str) -> str:
    described = fleet.ec2.describe_instances(InstanceIds=[instance_id])
    return str(described["Reservations"][0]["Instances"][0]["Placement"].get("HostId", ""))


def cli(fleet: FleetHarness, *argv: str) -> Any:
    """``vkec2 ARGV --config`` of this fleet, its JSON output parsed."""
    command = [sys.executable, "-m", "vkec2.cli", *argv, "--config", str(fleet.config_path)]
    done = subprocess.run(command, env=fleet.env(), capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def passes(fleet: FleetHarness) -> int:
    """How many hosts passes ran (the newest 100 stamps are kept: enough here)."""
    return int(fleet.store.redis.llen(fleet.store.keys.maintenance_runs(HOSTS)))


def test_mac_pods_share_a_pool_of_two_hosts_wait_for_scrubbing_and_hosts_outlive_24_hours(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    fleet, sim = mac_fleet(make_fleet, ec2_proxy)
    a = fleet.submit(example_pod("mac-a", annotations=ANN))
    fleet.wait_phase([a], {Phase.RUNNING}, timeout=120)
    b = fleet.submit(example_pod("mac-b", annotations=ANN))
    fleet.wait_phase([b], {Phase.RUNNING}, timeout=120)

    # Two hosts allocated (one Mac instance each), every launch placed on its pod's host.
    allocations = requests(sim, "AllocateHosts")
    assert len(sim.hosts) == 2 and len({r["ClientToken"] for r in allocations}) == 2
    assert all(r["TagSpecification.1.ResourceType"] == "dedicated-host" for r in allocations)
    launches = requests(sim, "RunInstances")
    recs = {uid: fleet.record(uid) for uid in (a, b)}
    assert {r.host_id for r in recs.values()} == set(sim.hosts)
    for uid, rec in recs.items():
        sent = [r for r in launches if r.get("Placement.HostId") == rec.host_id]
        assert sent and all(
            r["Placement.Tenancy"] == "host" and r["InstanceType"] == "mac2.metal" for r in sent
        )
        assert placement_in_moto(fleet, rec.instance_id) == rec.host_id, uid

    # A third pod waits for a host, then runs on the first pod's host once it is scrubbed.
    c = fleet.submit(example_pod("mac-c", annotations=ANN))
    wait_until(lambda: fleet.record(c).reason == "WaitingForHost", 60, "the third pod to wait for a host")
    waiting = fleet.record(c)
    assert waiting.phase is Phase.PENDING and "max 2 hosts" in waiting.message
    host_a = recs[a].host_id
    fleet.delete(a)
    fleet.wait_phase([a], {Phase.TERMINATED}, timeout=60)
    freed_at = time.monotonic()
    wait_until(lambda: sim.scrubbing(host_a), 30, "the first pod's host to be scrubbed")
    fleet.wait_phase([c], {Phase.RUNNING}, timeout=120)
    assert fleet.record(c).host_id == host_a
    assert time.monotonic() - freed_at >= SCRUB - 1  # never placed on the host while it scrubbed
    assert len(sim.hosts) == 2  # no third host: the pool's max

    # Deleting everything never releases a host younger than 24 hours...
    fleet.delete(b)
    fleet.delete(c)
    fleet.wait_phase([b, c], {Phase.TERMINATED}, timeout=60)
    seen = passes(fleet)
    wait_until(lambda: passes(fleet) >= seen + 5, 60, "five more host passes")
    assert ec2_proxy.calls["ReleaseHosts"] == 0
    assert set(hosts_in_moto(ec2_proxy).values()) == {"available"}
    # ... and releases the idle ones once it is (the double's clock moved on a day and an hour).
    sim.advance(DAY + 3600)
    wait_until(
        lambda: set(hosts_in_moto(ec2_proxy).values()) == {"released"}, 90, "the idle hosts to be released"
    )
    assert all(outcome == "ok" for outcome in ec2_proxy.log.outcomes("ReleaseHosts"))


def test_a_fleet_restarted_with_redis_emptied_rebuilds_its_hosts_from_ec2(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    fleet, sim = mac_fleet(make_fleet, ec2_proxy)
    uids = [fleet.submit(example_pod(f"mac-{n}", annotations=ANN)) for n in range(2)]
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=180)
    hosts = {fleet.record(u).host_id for u in uids}
    assert len(hosts) == 2

    for proc in fleet.workers:
        proc.stop()
    fleet.workers.clear()
    for key in fleet.store.redis.scan_iter(f"{fleet.store.keys.prefix}*"):
        fleet.store.redis.delete(key)
    assert fleet.store.host_records("macs") == []
    fleet.store.mark_reconciled("vkec2-test-node", fleet.store.ensure_epoch())
    fleet.start_beat()
    fleet.start_worker(concurrency=4)

    def rebuilt() -> bool:
        records = fleet.store.host_records("macs")
        return {r.host_id for r in records} == hosts and all(r.state.value == "occupied" for r in records)

    wait_until(rebuilt, 60, "the hosts rebuilt from DescribeHosts and the instances' tags")
    shown = cli(fleet, "hosts", "--json")
    assert {(r["host"], r["state"]) for r in shown} == {(h, "occupied") for h in hosts}
    assert {r["pods"] for r in shown} == set(uids) and all(r["releasable_in_s"] > 23 * 3600 for r in shown)
    assert cli(fleet, "status", "-o", "json")["hosts"]["macs"]["occupied"] == 2
    late = fleet.submit(example_pod("mac-late", annotations=ANN))
    wait_until(lambda: fleet.record(late).reason == "WaitingForHost", 60, "the new pod to wait for a host")
    seen = passes(fleet)
    wait_until(lambda: passes(fleet) >= seen + 3, 60, "three more host passes")
    assert len(sim.hosts) == 2 and ec2_proxy.calls["AllocateHosts"] == 2  # nothing double-allocated
    assert fleet.record(late).phase is Phase.PENDING
