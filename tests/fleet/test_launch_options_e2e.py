"""Every RunInstances of a small fleet run (a warm pool, plain pods, a pod with extra volumes, a Mac
pod) through the AWS-like EC2 double carries IMDSv2 required, never DisableApiTermination, and
its block device mapping (root volume always deleted with the instance, the Mac root at 100 GiB,
the pool's own root size); moto shows the metadata options and the volumes, and deleting the pods
leaves none of their volumes behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.maintenance.conftest import run_task
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.contract import VOLUMES_ANNOTATION
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
AMI_ROOT_GIB = 15  # moto's test AMI: /dev/sda1 from a 15 GiB snapshot


def root_and_volumes(sent: dict[str, str]) -> dict[str, dict[str, str]]:
    """Device -> its Ebs form parameters, from a RunInstances' ``BlockDeviceMapping.N.*``."""
    by_index: dict[str, dict[str, str]] = {}
    for key, value in sent.items():
        _, index, *rest = key.split(".")
        by_index.setdefault(index, {})[".".join(rest)] = value
    return {m.pop("DeviceName"): m for m in by_index.values()}


@pytest.mark.slow
def test_every_run_instances_of_a_fleet_is_launched_cleanly(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    fleet = make_fleet(
        aws_like=True,
        ec2={"root_volume": {"type": "gp3"}, "volumes": [{"device": "/dev/sdf", "size_gib": 10}]},
        warm_pools=[{"name": "warm", "desired_count": 2, "root_volume": {"size_gib": 50, "type": "gp3"}}],
        allowlists={"default": {"volume_types": ["gp3"]}},
        host_pools=[
            {
                "name": "macs",
                "instance_type": "mac2.metal",
                "availability_zones": ["us-west-2a", "us-west-2b"],
            }
        ],
    )
    fleet.start_worker(concurrency=4)
    wait_until(
        lambda: (
            run_task(fleet, "vkec2.maintenance.warm_pools") is not None
            and len(fleet.store.pool_ready("warm")) == 2
        ),
        120,
        "two Ready warm-pool members",
    )
    extra = json.dumps([{"device": "/dev/sdg", "size_gib": 20}])
    pods = {
        "plain-0": {},
        "plain-1": {},
        "plain-2": {},  # the pool has two members: this one is cold-launched like the pool's
        "volumes": {VOLUMES_ANNOTATION: extra},
        "mac": {"compute.amazonaws.com/host-pool": "macs"},  # the pool's type: mac2.metal
    }
    uids = {name: fleet.submit(example_pod(name, annotations=ann)) for name, ann in pods.items()}
    fleet.wait_phase(uids.values(), {Phase.RUNNING}, timeout=300)

    runs = [e for e in ec2_proxy.log.run_requests() if e.outcome == "ok" and e.launched]
    assert len({i for e in runs for i in e.launched}) >= 2 + 3  # the pool's two, the cold pods
    by_instance: dict[str, dict[str, dict[str, str]]] = {}
    for event in runs:
        assert event.params_under("MetadataOptions.") == {
            "MetadataOptions.HttpTokens": "required",
            "MetadataOptions.HttpEndpoint": "enabled",
            "MetadataOptions.HttpPutResponseHopLimit": "2",
        }, event.token
        assert "DisableApiTermination" not in dict(event.params), event.token
        assert event.param("Monitoring.Enabled") == "false"
        devices = root_and_volumes(event.params_under("BlockDeviceMapping."))
        assert devices["/dev/sda1"]["Ebs.DeleteOnTermination"] == "true"
        assert devices["/dev/sdf"] == {
            "Ebs.VolumeSize": "10",
            "Ebs.VolumeType": "gp3",
            "Ebs.DeleteOnTermination": "true",
        }
        by_instance[event.launched[0]] = devices

    records = {name: fleet.record(uid) for name, uid in uids.items()}
    mac = by_instance[records["mac"].instance_id]
    assert mac["/dev/sda1"]["Ebs.VolumeSize"] == "100"  # the Mac floor over the AMI's 15 GiB
    vols = by_instance[records["volumes"].instance_id]
    assert vols["/dev/sda1"]["Ebs.VolumeSize"] == str(AMI_ROOT_GIB)  # the type set, the AMI's size
    assert vols["/dev/sdg"]["Ebs.VolumeSize"] == "20"
    for name in ("plain-0", "plain-1", "plain-2"):  # claimed or launched like the pool's members
        assert by_instance[records[name].instance_id]["/dev/sda1"]["Ebs.VolumeSize"] == "50"

    # moto shows what was launched: IMDSv2 and the volumes.
    launched = [i for e in runs for i in e.launched]
    described = fleet.ec2.describe_instances(InstanceIds=launched)
    for instance in (i for r in described["Reservations"] for i in r["Instances"]):
        assert instance["MetadataOptions"]["HttpTokens"] == "required", instance["InstanceId"]
    volumes = fleet.ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [records["volumes"].instance_id]}]
    )["Volumes"]
    sizes = {v["Attachments"][0]["Device"]: v["Size"] for v in volumes}
    assert sizes == {"/dev/sda1": AMI_ROOT_GIB, "/dev/sdf": 10, "/dev/sdg": 20}

    # Deleting the pods leaves none of their volumes behind.
    pod_volumes = fleet.ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [r.instance_id for r in records.values()]}]
    )["Volumes"]
    for uid in uids.values():
        fleet.delete(uid)
    fleet.wait_phase(uids.values(), {Phase.TERMINATED}, timeout=300)

    def volumes_gone() -> bool:
        ids = {v["VolumeId"] for v in pod_volumes}
        left: list[Any] = fleet.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": sorted(ids)}])[
            "Volumes"
        ]
        return not left

    wait_until(volumes_gone, 60, "the pods' volumes deleted with their instances")
