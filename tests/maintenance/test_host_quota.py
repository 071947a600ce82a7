"""The quota refresh reads the Mac host quota of each host pool's family, and allocation stays within it.

moto's Service Quotas knows no EC2 codes, so the refresh asks the quotas fake (as the other quota
tests do); the hosts are allocated on moto's server through the double's host behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness
from tests.support.hostsim import HostSim
from tests.support.quotas_fake import QuotasFake
from vkec2.config.hosts import MAC_HOST_QUOTA_CODES
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.fleet.hosts import HostAllocator
from vkec2.fleet.quotas import QuotaRefresh

Make = Callable[..., FleetHarness]


def test_the_host_quota_is_refreshed_and_bounds_the_allocation(
    make_fleet: Make, ec2_proxy: Ec2Proxy, quotas_fake: QuotasFake
) -> None:
    ec2_proxy.hosts = HostSim()
    quotas_fake.quotas[("ec2", MAC_HOST_QUOTA_CODES["mac2"])] = 1.0
    pool = {
        "name": "macs",
        "instance_type": "mac2.metal",
        "availability_zones": ["us-west-2a"],
        "max_hosts": 3,
    }
    fleet = make_fleet(aws_like=False, quotas={"endpoint_url": quotas_fake.url}, host_pools=[pool])
    ec2 = Ec2Gateway(fleet.settings, fleet.store)
    capacity = QuotaRefresh(fleet.settings, fleet.store, ec2).refresh()
    assert fleet.store.host_quota("mac2") == 1.0
    assert "L-5D8DADF5" in capacity.reason and "mac2.metal: 1 x" in capacity.reason

    allocator = HostAllocator(fleet.settings, fleet.store, ec2)
    macs = fleet.settings.host_pools[0]
    first = allocator.allocate(macs)
    assert first.host_id and fleet.store.claim_host("macs", "pod-1", 1.0) == first.host_id
    second = allocator.allocate(macs)
    assert not second.host_id and "quota of 1 mac2 hosts is reached" in second.reason
    assert ec2_proxy.calls["AllocateHosts"] == 1
