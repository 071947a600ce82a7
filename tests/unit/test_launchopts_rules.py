"""The RunInstances request of a launch: IMDSv2 always, never DisableApiTermination=true, volumes from
config and the ``compute.amazonaws.com/volumes`` annotation (strictly checked, allowlisted), Mac
root volume floors, detailed monitoring, and launch templates overridden only by what is set."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from vkec2.config import Settings
from vkec2.contract import VOLUMES_ANNOTATION
from vkec2.domain.launchopts import (
    MAX_ANNOTATION_VOLUMES,
    LaunchOptions,
    RootDevice,
    Volume,
    needs_root_device,
    parse_volumes,
    root_device_of,
)
from vkec2.domain.podspec import launch_params
from vkec2.domain.runinstances import run_instances_request
from vkec2.errors import InvalidPodSpec

IMAGE = "ami-0123456789abcdef0"
ROOT = Path(__file__).resolve().parents[2]


def cfg(ec2: dict[str, Any] | None = None, **more: Any) -> Settings:
    return Settings.model_validate({"ec2": {"image_id": IMAGE, **(ec2 or {})}, **more})


def on_hosts(ec2: dict[str, Any]) -> Settings:
    """Settings for ``ec2``; a Mac type runs on a host pool of its own type (AWS runs Mac only there)."""
    kind = str(ec2["instance_type"])
    if not kind.startswith("mac"):
        return cfg(ec2)
    pool = {"name": "macs", "instance_type": kind, "availability_zones": ["us-west-2a"]}
    return cfg({**ec2, "host_pool": "macs"}, host_pools=[pool])


def pod(annotations: dict[str, str] | None = None, namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"uid": "u-1", "name": "p", "namespace": namespace, "annotations": annotations or {}}}


def request(
    settings: Settings, annotations: dict[str, str] | None = None, root: RootDevice | None = None
) -> Any:
    return run_instances_request(launch_params(settings, pod(annotations)), {"k": "v"}, "tok", root)


def test_every_launch_requires_imdsv2_and_never_protects_the_instance() -> None:
    kwargs = request(cfg())
    assert kwargs["MetadataOptions"] == {
        "HttpTokens": "required",
        "HttpEndpoint": "enabled",
        "HttpPutResponseHopLimit": 2,
    }
    assert kwargs["Monitoring"] == {"Enabled": False}
    assert "DisableApiTermination" not in kwargs and "BlockDeviceMappings" not in kwargs
    assert (kwargs["ImageId"], kwargs["InstanceType"], kwargs["ClientToken"]) == (IMAGE, "m5.large", "tok")
    tags = [{"Key": "k", "Value": "v"}]
    assert kwargs["TagSpecifications"] == [
        {"ResourceType": "instance", "Tags": tags},
        {"ResourceType": "volume", "Tags": tags},
    ]
    hop = request(cfg({"metadata": {"hop_limit": 1}, "detailed_monitoring": True}))
    assert hop["MetadataOptions"]["HttpPutResponseHopLimit"] == 1 and hop["Monitoring"] == {"Enabled": True}


def test_no_code_sends_disable_api_termination_but_the_template_override() -> None:
    sources = [p for p in (ROOT / "vkec2").rglob("*.py") if "DisableApiTermination" in p.read_text()]
    assert [p.name for p in sources] == ["runinstances.py"]
    text = (ROOT / "vkec2" / "domain" / "runinstances.py").read_text()
    assert re.findall(r'kwargs\["DisableApiTermination"\] = (\w+)', text) == ["False"]


def test_root_volume_and_extra_volumes_become_block_device_mappings() -> None:
    settings = cfg(
        {
            "root_volume": {"size_gib": 40, "type": "gp3", "iops": 4000, "encrypted": True},
            "volumes": [
                {"device": "/dev/sdf", "size_gib": 500, "type": "st1", "delete_on_termination": False}
            ],
        },
        allowlists={"default": {"volume_types": ["gp3"]}},
    )
    ann = {VOLUMES_ANNOTATION: json.dumps([{"device": "/dev/sdg", "size_gib": 20, "throughput": 300}])}
    kwargs = request(settings, ann, RootDevice("/dev/xvda", 8))
    assert kwargs["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "VolumeSize": 40,
                "VolumeType": "gp3",
                "Iops": 4000,
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        },
        {
            "DeviceName": "/dev/sdf",
            "Ebs": {"VolumeSize": 500, "VolumeType": "st1", "DeleteOnTermination": False},
        },
        {
            "DeviceName": "/dev/sdg",
            "Ebs": {"VolumeSize": 20, "VolumeType": "gp3", "Throughput": 300, "DeleteOnTermination": True},
        },
    ]
    # Only the type set: the AMI's size is said explicitly; a configured device name needs no AMI.
    typed = request(cfg({"root_volume": {"type": "gp2"}}), root=RootDevice("/dev/sda1", 30))
    assert typed["BlockDeviceMappings"][0]["Ebs"] == {
        "VolumeType": "gp2",
        "VolumeSize": 30,
        "DeleteOnTermination": True,
    }
    named = launch_params(cfg({"root_volume": {"encrypted": True, "device_name": "/dev/sda1"}}), pod())
    assert not needs_root_device(named.launch, named.instance_type)
    assert run_instances_request(named, {}, "t")["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda1"


@pytest.mark.parametrize(
    ("instance_type", "ami_gib", "expected"),
    [
        ("mac2.metal", 60, 100),
        ("mac2-m2pro.metal", 120, 120),
        ("mac1.metal", None, 100),
        ("m5.large", 8, None),
    ],
)
def test_mac_root_volumes_are_at_least_their_familys_floor(
    instance_type: str, ami_gib: int | None, expected: int | None
) -> None:
    params = launch_params(on_hosts({"instance_type": instance_type}), pod())
    assert needs_root_device(params.launch, instance_type) is (expected is not None)
    kwargs = run_instances_request(params, {}, "t", RootDevice("/dev/sda1", ami_gib))
    sizes = [m["Ebs"]["VolumeSize"] for m in kwargs.get("BlockDeviceMappings", [])]
    assert sizes == ([expected] if expected else [])
    # An explicit size wins over the floor (the operator's choice), and the floor is configurable.
    sized = launch_params(on_hosts({"instance_type": instance_type, "root_volume": {"size_gib": 500}}), pod())
    assert (
        run_instances_request(sized, {}, "t", RootDevice("/dev/sda1", 8))["BlockDeviceMappings"][0]["Ebs"][
            "VolumeSize"
        ]
        == 500
    )
    none = launch_params(on_hosts({"instance_type": instance_type, "root_volume_min_gib": {}}), pod())
    assert not needs_root_device(none.launch, instance_type)


def test_a_launch_template_is_overridden_only_by_what_is_set() -> None:
    template = {"name": "base", "version": "7"}
    kwargs = request(Settings.model_validate({"ec2": {"launch_template": template}}))
    assert kwargs["LaunchTemplate"] == {"LaunchTemplateName": "base", "Version": "7"}
    assert kwargs["DisableApiTermination"] is False
    assert "ImageId" not in kwargs and "InstanceType" not in kwargs and "Monitoring" not in kwargs
    assert kwargs["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 wins over the template
    explicit = request(
        cfg(
            {
                "launch_template": {"id": "lt-0123456789abcdef0"},
                "instance_type": "c5.large",
                "detailed_monitoring": False,
            }
        )
    )
    assert explicit["LaunchTemplate"] == {"LaunchTemplateId": "lt-0123456789abcdef0", "Version": "$Default"}
    assert (explicit["ImageId"], explicit["InstanceType"], explicit["Monitoring"]) == (
        IMAGE,
        "c5.large",
        {"Enabled": False},
    )
    annotated = request(
        Settings.model_validate(
            {"ec2": {"launch_template": template}, "allowlists": {"default": {"instance_types": ["*"]}}}
        ),
        {"compute.amazonaws.com/instance-type": "t3.small"},
    )
    assert annotated["InstanceType"] == "t3.small"


def test_the_volumes_annotation_is_parsed_with_defaults() -> None:
    (volume,) = parse_volumes('[{"device": "/dev/xvdc", "size_gib": 10}]')
    assert volume == Volume(device="/dev/xvdc", size_gib=10, type="gp3", delete_on_termination=True)
    two = parse_volumes(
        '[{"device": "/dev/sdf", "size_gib": 8, "type": "io2", "iops": 3000, "encrypted": true},'
        ' {"device": "/dev/sdg", "size_gib": 200, "type": "sc1", "delete_on_termination": true}]'
    )
    assert [(v.type, v.iops, v.encrypted) for v in two] == [("io2", 3000, True), ("sc1", None, None)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not a JSON list of volumes"),
        ('{"device": "/dev/sdf"}', "not a JSON list of objects"),
        ("[]", "an empty list"),
        (
            json.dumps([{"device": f"/dev/sd{c}", "size_gib": 1} for c in "fghij"]),
            f"at most {MAX_ANNOTATION_VOLUMES}",
        ),
        ('[{"device": "/dev/sda1", "size_gib": 1}]', "volume 0: device: not a device name"),
        ('[{"device": "/dev/sdf", "size_gib": "10"}]', "volume 0: size_gib: Input should be a valid integer"),
        (
            '[{"device": "/dev/sdf", "size_gib": 0}]',
            "volume 0: size_gib: Input should be greater than or equal to 1",
        ),
        ('[{"device": "/dev/sdf", "size_gib": 20000}]', "size_gib 20000 is outside 1-16384 GiB for gp3"),
        (
            '[{"device": "/dev/sdf", "size_gib": 10, "type": "gp2", "iops": 3000}]',
            "iops is only for io1, io2 and gp3",
        ),
        ('[{"device": "/dev/sdf", "size_gib": 10, "type": "io1"}]', "an io1 volume needs iops"),
        (
            '[{"device": "/dev/sdf", "size_gib": 200, "type": "st1", "throughput": 200}]',
            "throughput is only for gp3",
        ),
        ('[{"device": "/dev/sdf", "size_gib": 10, "type": "nvme"}]', "volume 0: type: Input should be"),
        (
            '[{"device": "/dev/sdf", "size_gib": 10, "bogus": 1}]',
            "volume 0: bogus: Extra inputs are not permitted",
        ),
        (
            '[{"device": "/dev/sdf", "size_gib": 10, "delete_on_termination": false}]',
            "always deleted with its instance",
        ),
        (
            '[{"device": "/dev/sdf", "size_gib": 10, "encrypted": true, "kms_key_id": "alias/x"}]',
            "kms_key_id is not accepted",
        ),
        (
            '[{"device": "/dev/sdf", "size_gib": 1}, {"device": "/dev/sdf", "size_gib": 2}]',
            "device /dev/sdf is used twice",
        ),
    ],
)
def test_bad_volumes_annotations_are_refused_clearly(text: str, problem: str) -> None:
    with pytest.raises(InvalidPodSpec) as info:
        parse_volumes(text)
    assert info.value.reason == "InvalidAnnotation"
    assert info.value.message.startswith(f"annotation {VOLUMES_ANNOTATION}: ")
    assert problem in info.value.message


def test_annotated_volumes_respect_the_configured_ones_and_the_allowlist() -> None:
    configured = cfg({"volumes": [{"device": "/dev/sdf", "size_gib": 1, "type": "gp3"}]})
    with pytest.raises(InvalidPodSpec, match="device /dev/sdf is used twice"):
        launch_params(configured, pod({VOLUMES_ANNOTATION: '[{"device": "/dev/sdf", "size_gib": 2}]'}))
    # gp3 is configured, so allowed; io2 is neither configured nor allowlisted.
    ok = launch_params(configured, pod({VOLUMES_ANNOTATION: '[{"device": "/dev/sdg", "size_gib": 2}]'}))
    assert [v.device for v in ok.launch.volumes] == ["/dev/sdf", "/dev/sdg"] and ok.warm_pool is None
    io2 = '[{"device": "/dev/sdg", "size_gib": 8, "type": "io2", "iops": 100}]'
    with pytest.raises(InvalidPodSpec) as info:
        launch_params(configured, pod({VOLUMES_ANNOTATION: io2}))
    assert (
        info.value.reason == "AnnotationNotAllowed"
        and "allowlists.default.volume_types" in info.value.message
    )
    lab = cfg(allowlists={"namespaces": {"lab": {"volume_types": ["io2"]}}})
    assert launch_params(lab, pod({VOLUMES_ANNOTATION: io2}, namespace="lab")).launch.volumes[0].type == "io2"


def test_a_warm_pool_pod_cannot_add_volumes() -> None:
    settings = cfg(
        warm_pools=[{"name": "ready", "desired_count": 1}], allowlists={"default": {"volume_types": ["*"]}}
    )
    assert launch_params(settings, pod()).warm_pool == "ready"
    # Asking for volumes leaves the default pool (its members have none) ...
    ann = {VOLUMES_ANNOTATION: '[{"device": "/dev/sdf", "size_gib": 2}]'}
    assert launch_params(settings, pod(ann)).warm_pool is None
    # ... and contradicts a pool named explicitly.
    with pytest.raises(InvalidPodSpec, match="launches its instances without a pod's volumes"):
        launch_params(settings, pod({**ann, "compute.amazonaws.com/warm-pool": "ready"}))


def test_default_options_leave_the_fingerprint_alone_and_set_ones_change_it() -> None:
    plain = launch_params(cfg(), pod())
    assert plain.launch == LaunchOptions()
    changed = dataclasses.replace(plain, launch=dataclasses.replace(plain.launch, http_tokens="optional"))
    assert changed.fingerprint() != plain.fingerprint()


def test_root_device_of_an_image_description() -> None:
    image = {
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 30, "SnapshotId": "snap-1"}},
        ],
    }
    assert root_device_of(image) == RootDevice("/dev/xvda", 30)
    assert root_device_of({"RootDeviceName": "/dev/sda1"}) == RootDevice("/dev/sda1", None)
    assert root_device_of({}) is None
