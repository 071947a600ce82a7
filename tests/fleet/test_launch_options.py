"""Launch hygiene against moto's server over HTTP, checked at the endpoint (the EC2 double in front of
moto keeps each RunInstances' form parameters): IMDSv2 required with the configured hop limit,
monitoring, the root volume (its device read once with DescribeImages) and extra volumes, a Mac
root floor, and a launch template whose termination protection the fleet overrides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.support.awslike import Event
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import TEST_AMI
from vkec2.config import Settings
from vkec2.contract import VOLUMES_ANNOTATION
from vkec2.domain.podspec import launch_params
from vkec2.ec2.gateway import Ec2Gateway

TAGS = {"Name": "launch-options"}


#: A host pool for the Mac launches (AWS runs Mac instances only on Dedicated Hosts).
MACS = {"name": "macs", "instance_type": "mac2.metal", "availability_zones": ["us-west-2a"]}


def settings_for(proxy: Ec2Proxy, ec2: dict[str, Any]) -> Settings:
    return Settings.model_validate(
        {
            "cluster_name": f"lo-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": proxy.url, "max_attempts": 1},
            "ec2": ec2,
            "host_pools": [MACS],
            "allowlists": {"default": {"volume_types": ["gp3", "st1"], "instance_types": ["*"]}},
        }
    )


def pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    return {"metadata": {"uid": uid, "name": "p", "namespace": "default", "annotations": annotations or {}}}


@pytest.fixture
def moto(moto_url: str) -> Iterator[Any]:
    yield boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")


def last_run(proxy: Ec2Proxy) -> Event:
    return proxy.log.run_requests()[-1]


def volumes_of(moto: Any, instance_id: str) -> dict[str, tuple[int, str, bool]]:
    found = moto.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])
    return {
        v["Attachments"][0]["Device"]: (v["Size"], v["VolumeType"], v["Encrypted"]) for v in found["Volumes"]
    }


def test_a_pod_launch_carries_imdsv2_monitoring_and_its_volumes(ec2_proxy: Ec2Proxy, moto: Any) -> None:
    settings = settings_for(
        ec2_proxy,
        {
            "image_id": TEST_AMI,
            "metadata": {"hop_limit": 3},
            "detailed_monitoring": True,
            "root_volume": {"size_gib": 40, "type": "gp3", "encrypted": True},
            "volumes": [{"device": "/dev/sdf", "size_gib": 200, "type": "st1"}],
        },
    )
    gateway = Ec2Gateway(settings)
    params = launch_params(settings, pod({VOLUMES_ANNOTATION: '[{"device": "/dev/sdg", "size_gib": 20}]'}))
    name = f"lo-{uuid.uuid4().hex[:8]}"
    instance = gateway.run_instance(params, {"Name": name}, f"lo-{uuid.uuid4().hex}")
    sent = last_run(ec2_proxy)
    assert sent.launched == (instance["InstanceId"],)
    assert sent.params_under("MetadataOptions.") == {
        "MetadataOptions.HttpTokens": "required",
        "MetadataOptions.HttpEndpoint": "enabled",
        "MetadataOptions.HttpPutResponseHopLimit": "3",
    }
    assert sent.param("Monitoring.Enabled") == "true" and sent.param("DisableApiTermination") == ""
    devices = {
        v: k.split(".")[1]
        for k, v in sent.params_under("BlockDeviceMapping.").items()
        if k.endswith("DeviceName")
    }
    root = devices["/dev/sda1"]  # moto's test AMI's root device, read with DescribeImages
    assert sent.param(f"BlockDeviceMapping.{root}.Ebs.VolumeSize") == "40"
    assert sent.param(f"BlockDeviceMapping.{root}.Ebs.DeleteOnTermination") == "true"
    for device in ("/dev/sdf", "/dev/sdg"):
        assert sent.param(f"BlockDeviceMapping.{devices[device]}.Ebs.DeleteOnTermination") == "true"
    # moto shows what was launched.
    (reservation,) = moto.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"]
    described = reservation["Instances"][0]
    assert described["MetadataOptions"]["HttpTokens"] == "required"
    assert described["MetadataOptions"]["HttpPutResponseHopLimit"] == 3
    assert volumes_of(moto, instance["InstanceId"]) == {
        "/dev/sda1": (40, "gp3", True),
        "/dev/sdf": (200, "st1", False),
        "/dev/sdg": (20, "gp3", False),
    }
    tagged = moto.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
    assert sorted(v["Attachments"][0]["Device"] for v in tagged) == ["/dev/sda1", "/dev/sdf", "/dev/sdg"]
    # The AMI's root device is asked once per process.
    ec2_proxy.reset_counts()
    gateway.run_instance(params, TAGS, f"lo-{uuid.uuid4().hex}")
    assert ec2_proxy.calls["DescribeImages"] == 0 and ec2_proxy.calls["RunInstances"] == 1


def test_a_mac_instance_gets_a_100_gib_root_volume(ec2_proxy: Ec2Proxy, moto: Any) -> None:
    settings = settings_for(
        ec2_proxy, {"image_id": TEST_AMI, "instance_type": "mac2.metal", "host_pool": "macs"}
    )
    params = launch_params(settings, pod())
    instance = Ec2Gateway(settings).run_instance(params, TAGS, f"lo-{uuid.uuid4().hex}")
    assert last_run(ec2_proxy).param("BlockDeviceMapping.1.Ebs.VolumeSize") == "100"
    assert volumes_of(moto, instance["InstanceId"])["/dev/sda1"][0] == 100
    # A plain instance sends no mapping: the AMI's root volume as it is.
    plain = settings_for(ec2_proxy, {"image_id": TEST_AMI})
    Ec2Gateway(plain).run_instance(launch_params(plain, pod()), TAGS, f"lo-{uuid.uuid4().hex}")
    assert last_run(ec2_proxy).params_under("BlockDeviceMapping.") == {}


def test_a_launch_template_is_used_and_its_termination_protection_overridden(
    ec2_proxy: Ec2Proxy, moto: Any
) -> None:
    name = f"vk-{uuid.uuid4().hex[:8]}"
    data = {"ImageId": TEST_AMI, "InstanceType": "t3.micro", "DisableApiTermination": True}
    moto.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)
    settings = settings_for(ec2_proxy, {"launch_template": {"name": name}})
    gateway = Ec2Gateway(settings)
    params = launch_params(settings, pod())
    assert (params.image_id, params.instance_type) == ("", "")  # both the template's
    instance = gateway.run_instance(params, TAGS, f"lo-{uuid.uuid4().hex}")
    sent = last_run(ec2_proxy)
    assert sent.params_under("LaunchTemplate.") == {
        "LaunchTemplate.LaunchTemplateName": name,
        "LaunchTemplate.Version": "$Default",
    }
    assert sent.param("DisableApiTermination") == "false"
    assert sent.param("InstanceType") == sent.param("ImageId") == sent.param("Monitoring.Enabled") == ""
    assert sent.param("MetadataOptions.HttpTokens") == "required"
    assert instance["InstanceType"] == "t3.micro"
    assert gateway.terminate([instance["InstanceId"]]) == []  # not protected: the override held

    # The double refuses to terminate what the template protects when nothing overrides it.
    raw = moto_client_via(ec2_proxy).run_instances(
        LaunchTemplate={"LaunchTemplateName": name}, MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]
    with pytest.raises(Exception, match="OperationNotPermitted"):
        gateway.terminate([raw])
    ec2_proxy.protected.discard(raw)
    assert gateway.terminate([raw]) == []


def moto_client_via(proxy: Ec2Proxy) -> Any:
    return boto3.client("ec2", endpoint_url=proxy.url, region_name="us-west-2")
