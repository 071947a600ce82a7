"""Launch hygiene settings: IMDSv2 by default (IMDSv1 only with the insecure flag), EBS limits per
volume type, launch template references, Mac defaults per family (root volume, boot timeout), pool
inheritance, and config errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vkec2.config import InvalidConfig, Settings, load_config
from vkec2.config.launchopts import MAC_BOOT_TIMEOUT_SECONDS, MAC_ROOT_MIN_GIB, RootVolume

IMAGE = "ami-0123456789abcdef0"
KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"


def errors(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env={})
    return "\n".join(info.value.errors)


def test_defaults_require_imdsv2_with_a_hop_limit_of_two_and_send_no_volumes() -> None:
    ec2 = Settings().ec2
    assert (ec2.metadata.http_tokens, ec2.metadata.hop_limit) == ("required", 2)
    assert ec2.root_volume == RootVolume() and ec2.volumes is None and ec2.launch_template is None
    assert ec2.detailed_monitoring is None
    assert ec2.root_volume_min_gib == MAC_ROOT_MIN_GIB and set(MAC_ROOT_MIN_GIB) >= {"mac1", "mac2"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"metadata": {"http_tokens": "optional"}}, "ec2.metadata: http_tokens 'optional' turns IMDSv1 on"),
        ({"metadata": {"hop_limit": 0}}, "ec2.metadata.hop_limit"),
        ({"metadata": {"hop_limit": 65}}, "ec2.metadata.hop_limit"),
        ({"metadata": {"http_tokens": "off"}}, "ec2.metadata.http_tokens"),
        ({"root_volume": {"type": "gp2", "iops": 3000}}, "iops is only for io1, io2 and gp3 volumes"),
        ({"root_volume": {"type": "io2", "size_gib": 100}}, "an io2 volume needs iops"),
        ({"root_volume": {"type": "gp3", "size_gib": 20000}}, "size_gib 20000 is outside 1-16384 GiB"),
        ({"root_volume": {"type": "st1", "size_gib": 50}}, "outside 125-16384 GiB for st1"),
        ({"root_volume": {"type": "gp3", "throughput": 2000}}, "throughput 2000 is outside 125-1000"),
        ({"root_volume": {"type": "io1", "iops": 10, "size_gib": 10}}, "iops 10 is outside 100-64000"),
        ({"root_volume": {"throughput": 200}}, "iops and throughput need a type"),
        ({"root_volume": {"kms_key_id": "alias/ebs"}}, "kms_key_id needs encrypted: true"),
        ({"root_volume": {"encrypted": True, "kms_key_id": "nope"}}, "not a KMS key ID"),
        ({"root_volume": {"device_name": "/dev/sdf"}}, "not a root device name"),
        ({"volumes": [{"device": "/dev/sda1", "size_gib": 10}]}, "ec2.volumes[0].device: not a device name"),
        ({"volumes": [{"device": "/dev/sdf"}]}, "ec2.volumes[0].size_gib: Field required"),
        (
            {"volumes": [{"device": "/dev/sdf", "size_gib": 1}, {"device": "/dev/sdf", "size_gib": 2}]},
            "device /dev/sdf is used twice",
        ),
        (
            {"volumes": [{"device": f"/dev/sd{c}", "size_gib": 1} for c in "fghijklmn"]},
            "9 volumes; at most 8",
        ),
        ({"launch_template": {"id": "lt-12"}}, "not a launch template ID"),
        ({"launch_template": {"name": "ab"}}, "not a launch template name"),
        ({"launch_template": {"name": "ok-name", "version": "latest"}}, "not $Latest, $Default or a version"),
        (
            {"launch_template": {"id": "lt-0123456789abcdef0", "name": "x-y-z"}},
            "set exactly one of id and name",
        ),
        ({"launch_template": {}}, "set exactly one of id and name"),
        ({"root_volume_min_gib": {"mac2.metal": 100}}, "not an instance family"),
        ({"detailed_monitoring": "yes please"}, "ec2.detailed_monitoring"),
    ],
)
def test_bad_launch_settings_are_named_by_key(tmp_path: Path, raw: dict[str, Any], expected: str) -> None:
    assert expected in errors(tmp_path, {"ec2": {"image_id": IMAGE, **raw}})


def test_imdsv1_only_with_the_insecure_flag() -> None:
    ec2 = Settings.model_validate(
        {"ec2": {"metadata": {"http_tokens": "optional", "insecure_allow_imdsv1": True, "hop_limit": 64}}}
    ).ec2
    assert (ec2.metadata.http_tokens, ec2.metadata.hop_limit) == ("optional", 64)


def test_aws_limits_at_their_edges_are_accepted() -> None:
    ec2 = Settings.model_validate(
        {
            "ec2": {
                "image_id": IMAGE,
                "root_volume": {"type": "gp3", "size_gib": 16384, "iops": 16000, "throughput": 1000},
                "volumes": [
                    {"device": "/dev/sdf", "size_gib": 65536, "type": "io2", "iops": 256000},
                    {"device": "/dev/xvdb", "size_gib": 125, "type": "sc1"},
                    {
                        "device": "/dev/sdg",
                        "size_gib": 4,
                        "type": "io1",
                        "iops": 100,
                        "encrypted": True,
                        "kms_key_id": f"arn:aws:kms:us-west-2:123456789012:key/{KEY}",
                    },
                ],
                "launch_template": {"name": "vk(ec2)/base_1.x", "version": "$Latest"},
            }
        }
    ).ec2
    assert ec2.volumes is not None and [v.delete_on_termination for v in ec2.volumes] == [True] * 3
    assert ec2.launch_template is not None and ec2.launch_template.version == "$Latest"


def test_a_root_volume_with_the_templates_ami_needs_a_device_name(tmp_path: Path) -> None:
    raw: dict[str, Any] = {"ec2": {"launch_template": {"name": "base"}, "root_volume": {"size_gib": 200}}}
    assert "ec2: root_volume is set but the AMI comes from the launch template" in errors(tmp_path, raw)
    raw["ec2"]["root_volume"]["device_name"] = "/dev/xvda"
    Settings.model_validate(raw)
    pool = {"name": "p", "root_volume": {"size_gib": 150}}
    raw = {"ec2": {"launch_template": {"name": "base"}}, "warm_pools": [pool]}
    assert "warm_pools.p: root_volume is set" in errors(tmp_path, raw)


def test_pools_inherit_or_override_the_launch_options() -> None:
    s = Settings.model_validate(
        {
            "ec2": {
                "image_id": IMAGE,
                "root_volume": {"size_gib": 50},
                "volumes": [{"device": "/dev/sdf", "size_gib": 10}],
                "detailed_monitoring": True,
                "launch_template": {"name": "base"},
                "metadata": {"hop_limit": 3},
            },
            "warm_pools": [
                {
                    "name": "own",
                    "root_volume": {"size_gib": 300},
                    "volumes": [],
                    "detailed_monitoring": False,
                    "launch_template": {"id": "lt-0123456789abcdef0", "version": "4"},
                    "instance_type": "c5.large",
                },
                {"name": "inherits"},
            ],
        }
    )
    own, inherits = (s.pool_launch_defaults(p) for p in s.warm_pools)
    assert (own.root_volume.size_gib, own.volumes, own.detailed_monitoring) == (300, [], False)
    assert own.launch_template is not None and own.launch_template.id == "lt-0123456789abcdef0"
    assert own.metadata.hop_limit == inherits.metadata.hop_limit == 3
    assert not own.type_from_template()  # the pool names its type
    assert (inherits.root_volume.size_gib, inherits.detailed_monitoring) == (50, True)
    assert inherits.volumes is not None and inherits.volumes[0].device == "/dev/sdf"
    assert inherits.type_from_template()  # the default m5.large is not sent over the template's
    assert not s.ec2.type_from_template() or "instance_type" not in s.ec2.model_fields_set
    assert not Settings().ec2.type_from_template()  # no template: m5.large is the type


def test_boot_timeouts_per_family_override_the_default() -> None:
    agent = Settings.model_validate(
        {"agent": {"boot_timeout_seconds": 300, "boot_timeouts": {**MAC_BOOT_TIMEOUT_SECONDS, "p5": 1200}}}
    ).agent
    assert agent.boot_timeout_for("m5.large") == 300
    assert agent.boot_timeout_for("mac2-m2pro.metal") == agent.boot_timeout_for("mac1.metal") == 3600
    assert agent.boot_timeout_for("p5.48xlarge") == 1200
    assert agent.boot_timeout_for("") == 300  # before the launch: the default
    assert Settings().agent.boot_timeout_for("mac2.metal") == MAC_BOOT_TIMEOUT_SECONDS["mac2"] >= 1200


def test_bad_boot_timeouts_are_named(tmp_path: Path) -> None:
    text = errors(tmp_path, {"agent": {"boot_timeouts": {"mac2": 0}}})
    assert "agent.boot_timeouts" in text and "mac2: must be > 0" in text
