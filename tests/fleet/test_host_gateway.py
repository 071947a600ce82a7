"""The gateway's Dedicated-host calls against moto's server, through the double's host behaviour (hostsim)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import launch_params
from tests.support.hostsim import HostSim
from vkec2.config import Settings
from vkec2.config.hosts import HostPool
from vkec2.domain.hosts import allocation_token, host_request
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import Ec2Error

ZONE = "us-west-2a"
DAY = 86400.0


@pytest.fixture
def sim(ec2_proxy: Ec2Proxy) -> HostSim:
    ec2_proxy.hosts = HostSim(scrub_seconds=30.0)
    return ec2_proxy.hosts


@pytest.fixture
def gateway(ec2_proxy: Ec2Proxy, sim: HostSim) -> Iterator[Ec2Gateway]:
    settings = Settings.model_validate(
        {
            "cluster_name": f"gw-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 1},
        }
    )
    yield Ec2Gateway(settings)


MACS = HostPool.model_validate({"name": "macs", "instance_type": "mac2.metal", "availability_zones": [ZONE]})


def allocate(gateway: Ec2Gateway, seq: int, zone: str = ZONE) -> str:
    cluster = gateway.settings.cluster_name
    return gateway.allocate_host(
        host_request(MACS, cluster, seq), zone, allocation_token(cluster, "macs", seq, zone)
    )


def test_an_allocation_is_tagged_idempotent_and_listed_by_cluster(
    gateway: Ec2Gateway, ec2_proxy: Ec2Proxy
) -> None:
    host_id = allocate(gateway, 1)
    assert allocate(gateway, 1) == host_id  # the same ClientToken: the same host
    other = allocate(gateway, 2)
    assert other != host_id
    listed = {h["HostId"]: h for h in gateway.cluster_hosts()}
    assert set(listed) == {host_id, other}  # moto alone answers a tag filter with nothing
    tags = {t["Key"]: t["Value"] for t in listed[host_id]["Tags"]}
    assert (tags["vkec2.io/host-pool"], tags["vkec2.io/host-slot"]) == ("macs", "1")
    assert ec2_proxy.calls["AllocateHosts"] == 3
    stranger = Ec2Gateway(
        Settings.model_validate({"cluster_name": "someone-else", "aws": gateway.settings.aws})
    )
    assert stranger.cluster_hosts() == []


def test_no_host_capacity_in_a_zone_is_aws_answer(gateway: Ec2Gateway, sim: HostSim) -> None:
    sim.no_capacity.add("us-west-2b")
    with pytest.raises(Ec2Error) as info:
        allocate(gateway, 1, "us-west-2b")
    assert info.value.code == "InsufficientHostCapacity"


def test_one_instance_per_mac_host_scrubbing_and_the_24_hour_minimum(
    gateway: Ec2Gateway, sim: HostSim
) -> None:
    host_id = allocate(gateway, 1)
    on_host = dataclasses.replace(launch_params("mac2.metal"), tenancy="host", host_id=host_id)
    instance = gateway.run_instance(on_host, {"t": "1"}, "vkec2-test-1")
    assert instance["Placement"]["HostId"] == host_id
    (host,) = gateway.cluster_hosts()
    assert [i["InstanceId"] for i in host["Instances"]] == [instance["InstanceId"]]
    with pytest.raises(Ec2Error) as full:
        gateway.run_instance(on_host, {"t": "1"}, "vkec2-test-2")
    assert full.value.code == "InsufficientCapacityOnHost" and full.value.capacity
    assert gateway.release_hosts([host_id]) == {
        host_id: "Client.InvalidHost.Occupied: "
        + (f"Dedicated host '{host_id}' cannot be released as it is occupied")
    }
    gateway.terminate([instance["InstanceId"]])
    (host,) = gateway.cluster_hosts()
    assert host["State"] == "pending" and not host["Instances"]  # scrubbing
    with pytest.raises(Ec2Error) as scrubbing:
        gateway.run_instance(on_host, {"t": "1"}, "vkec2-test-3")
    assert scrubbing.value.code == "InsufficientCapacityOnHost"
    refused = gateway.release_hosts([host_id])
    assert "must be allocated to your AWS account for at least 24 hour(s)" in refused[host_id]
    sim.advance(DAY)
    (host,) = gateway.cluster_hosts()
    assert host["State"] == "available"
    assert gateway.release_hosts([host_id]) == {}
    assert gateway.cluster_hosts() == []  # released: no longer live
