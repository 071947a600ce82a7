"""``vkec2 infra iam-policy``: the workers' IAM policy allows launching only what the configuration and
its allowlists allow (images, subnets, groups, key pairs, types, profiles), in the cluster's VPC,
tagged with the cluster; tagging and terminating only the cluster's instances; PassRole only for
the instance roles, to EC2."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vkec2.cli.main import main as vkec2
from vkec2.config import Settings
from vkec2.domain.iampolicy import PolicyInputs, workers_policy

ACCOUNT = "123456789012"
EC2 = f"arn:aws:ec2:us-west-2:{ACCOUNT}"
CONFIG: dict[str, Any] = {
    "cluster_name": "ios-ci",
    "ec2": {
        "image_id": "ami-0a",
        "subnets": ["subnet-0a"],
        "security_groups": ["sg-0a"],
        "key_pair": "fleet-kp",
        "instance_profile": "vkec2-agent",
    },
    "warm_pools": [{"name": "mac", "instance_type": "mac2.metal", "image_id": "ami-0mac"}],
    "allowlists": {
        "default": {"subnets": ["subnet-0b"]},
        "namespaces": {"gpu": {"instance_types": ["g5.xlarge"], "instance_profiles": ["gpu-agent"]}},
    },
}


def statement(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


def policy_of(config: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    return workers_policy(Settings.model_validate(config), PolicyInputs(account=ACCOUNT, **inputs))


def test_launches_only_with_the_allowed_resources_in_the_vpc() -> None:
    policy = policy_of(CONFIG, vpc_id="vpc-0f")
    images = statement(policy, "LaunchFromAllowedImagesAndKeys")["Resource"]
    assert images == [
        "arn:aws:ec2:us-west-2::image/ami-0a",
        "arn:aws:ec2:us-west-2::image/ami-0mac",
        f"{EC2}:key-pair/fleet-kp",
        f"{EC2}:volume/*",
    ]
    network = statement(policy, "LaunchIntoAllowedNetwork")
    assert network["Resource"] == [
        f"{EC2}:subnet/subnet-0a",
        f"{EC2}:subnet/subnet-0b",
        f"{EC2}:security-group/sg-0a",
        f"{EC2}:network-interface/*",
    ]
    assert network["Condition"] == {"ArnEquals": {"ec2:Vpc": f"{EC2}:vpc/vpc-0f"}}
    instance = statement(policy, "LaunchTaggedInstancesOfAllowedShape")
    assert instance["Resource"] == f"{EC2}:instance/*"
    assert instance["Condition"]["StringEquals"] == {
        "aws:RequestTag/vkec2.io/cluster": "ios-ci",
        "ec2:InstanceType": ["g5.xlarge", "m5.large", "mac2.metal"],
    }
    assert instance["Condition"]["ArnEqualsIfExists"] == {
        "ec2:InstanceProfile": [
            f"arn:aws:iam::{ACCOUNT}:instance-profile/gpu-agent",
            f"arn:aws:iam::{ACCOUNT}:instance-profile/vkec2-agent",
        ]
    }
    no_wildcard = json.dumps(
        [
            statement(policy, s)["Resource"]
            for s in ("LaunchFromAllowedImagesAndKeys", "LaunchIntoAllowedNetwork")
        ]
    )
    assert "subnet/*" not in no_wildcard and "image/*" not in no_wildcard and "key-pair/*" not in no_wildcard


def test_tags_and_terminations_only_on_the_clusters_instances_and_passrole_only_to_ec2() -> None:
    policy = policy_of(CONFIG)
    manage = statement(policy, "ManageOwnInstances")
    assert manage["Condition"] == {"StringEquals": {"aws:ResourceTag/vkec2.io/cluster": "ios-ci"}}
    assert set(manage["Action"]) == {"ec2:CreateTags", "ec2:TerminateInstances"}
    assert statement(policy, "TagAtLaunch")["Condition"] == {
        "StringEquals": {"ec2:CreateAction": "RunInstances"}
    }
    passrole = statement(policy, "PassTheInstanceRoles")
    assert passrole["Resource"] == [
        f"arn:aws:iam::{ACCOUNT}:role/gpu-agent",
        f"arn:aws:iam::{ACCOUNT}:role/vkec2-agent",
    ]
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    roles = policy_of(CONFIG, roles=("agent-role",))
    assert statement(roles, "PassTheInstanceRoles")["Resource"] == [f"arn:aws:iam::{ACCOUNT}:role/agent-role"]
    # Only Describe and the quota lookup, which EC2 and Service Quotas cannot scope, stay on "*".
    assert [s["Sid"] for s in policy["Statement"] if s["Resource"] == "*"] == ["Describe", "Quotas"]


def test_a_star_opens_its_kind_and_nothing_named_means_none() -> None:
    opened = {
        **CONFIG,
        "allowlists": {"default": {"images": ["*"], "instance_types": ["*"], "instance_profiles": ["*"]}},
    }
    policy = policy_of(opened)
    assert "arn:aws:ec2:us-west-2::image/*" in statement(policy, "LaunchFromAllowedImagesAndKeys")["Resource"]
    condition = statement(policy, "LaunchTaggedInstancesOfAllowedShape")["Condition"]
    assert "ec2:InstanceType" not in condition["StringEquals"] and "ArnEqualsIfExists" not in condition
    bare = policy_of({"ec2": {"image_id": "ami-0a"}})
    assert statement(bare, "LaunchTaggedInstancesOfAllowedShape")["Condition"]["Null"] == {
        "ec2:InstanceProfile": "true"
    }
    assert not any(s["Sid"] == "PassTheInstanceRoles" for s in bare["Statement"])
    assert not any("key-pair" in r for r in statement(bare, "LaunchFromAllowedImagesAndKeys")["Resource"])


def test_spot_adds_the_spot_request_and_its_service_linked_role_only_when_usable() -> None:
    assert not [s for s in policy_of(CONFIG)["Statement"] if "Spot" in s["Sid"]]
    for spot in (
        {**CONFIG, "ec2": {**CONFIG["ec2"], "capacity_type": "spot"}},
        {**CONFIG, "allowlists": {"default": {"capacity_types": ["spot-or-on-demand"]}}},
    ):
        policy = policy_of(spot)
        assert statement(policy, "LaunchSpot")["Resource"] == f"{EC2}:spot-instances-request/*"
        role = statement(policy, "SpotServiceLinkedRole")
        assert role["Action"] == "iam:CreateServiceLinkedRole"
        assert role["Condition"] == {"StringLike": {"iam:AWSServiceName": "spot.amazonaws.com"}}


def test_the_command_prints_the_policy_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(CONFIG))
    assert vkec2(["infra", "iam-policy", "--config", str(path), "--account", ACCOUNT, "--vpc", "vpc-0f"]) == 0
    assert json.loads(capsys.readouterr().out) == policy_of(CONFIG, vpc_id="vpc-0f")
    assert vkec2(["infra", "iam-policy", "--config", str(path), "--account", "12345"]) == 2
    assert "'12345' is not a 12-digit AWS account ID" in capsys.readouterr().err
    assert vkec2(["infra", "iam-policy", "--config", str(path), "--vpc", "subnet-0a"]) == 2
    assert "is not a VPC ID" in capsys.readouterr().err


def test_the_policy_in_docs_is_what_the_command_prints() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    section = text[text.index("### IAM policy of the workers") :]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    shown = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    printed = json.dumps(policy_of(config, vpc_id="vpc-0abc1234"))
    assert json.loads(printed.replace("us-west-2", "REGION").replace(ACCOUNT, "ACCOUNT")) == shown
