"""Annotation escalation is refused: a pod gets only the subnets, security groups, key pairs, AMIs,
instance types, instance profiles and capacity types the configuration launches with or its
namespace's allowlist names; anything else fails the pod with reason AnnotationNotAllowed (a Warning
event, no EC2 call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fleet.world import World, pod, settings
from vkec2.config import InvalidConfig, Settings, load_config
from vkec2.contract import ANNOTATION_PREFIX as P
from vkec2.domain.models import Phase
from vkec2.domain.podspec import launch_params
from vkec2.errors import InvalidPodSpec

IMAGE = "ami-0123456789abcdef0"
EC2: dict[str, Any] = {
    "image_id": IMAGE,
    "instance_type": "m5.large",
    "subnets": ["subnet-0a"],
    "security_groups": ["sg-0a"],
    "instance_profile": "fleet-profile",
    "key_pair": "fleet-kp",
}
POOL: dict[str, Any] = {
    "name": "mac",
    "instance_type": "mac2.metal",
    "image_id": "ami-0mac",
    "subnets": ["subnet-0m"],
    "security_groups": ["sg-0m"],
    "instance_profile": "mac-profile",
    "key_pair": "mac-kp",
    "host_pool": "macs",
}
HOSTS = [{"name": "macs", "instance_type": "mac2.metal", "subnets": ["subnet-0m"]}]

#: An annotation, a value of the account no configuration names, and a configured one.
ESCALATIONS = [
    ("subnet-id", "subnet-0evil", "subnet-0a"),
    ("security-groups", "sg-0a,sg-0evil", "sg-0a"),
    ("key-pair", "someone-elses-kp", "fleet-kp"),
    ("image-id", "ami-0evil", IMAGE),
    ("instance-type", "p5.48xlarge", "m5.large"),
    ("instance-types", "m5.large,p5.48xlarge", "m5.large"),
    ("instance-profile", "admin-profile", "fleet-profile"),
    ("instance-profile", "arn:aws:iam::123456789012:instance-profile/admin", "fleet-profile"),
    ("capacity-type", "spot", "on-demand"),
]


def cfg(**overrides: Any) -> Settings:
    return Settings.model_validate({"ec2": EC2, "warm_pools": [POOL], "host_pools": HOSTS, **overrides})


def a_pod(namespace: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": namespace,
            "uid": "u-1",
            "annotations": {f"{P}{k}": v for k, v in annotations.items()},
        }
    }


def refused(settings_: Settings, namespace: str, **annotations: str) -> InvalidPodSpec:
    with pytest.raises(InvalidPodSpec) as info:
        launch_params(settings_, a_pod(namespace, **annotations))
    return info.value


@pytest.mark.parametrize(("name", "value", "configured"), ESCALATIONS)
def test_a_value_nobody_configured_is_refused_naming_annotation_value_and_namespace(
    name: str, value: str, configured: str
) -> None:
    error = refused(cfg(), "team-a", **{name: value})
    assert error.reason == "AnnotationNotAllowed"
    bad = value.split(",")[-1]
    assert f"annotation {P}{name}: {bad!r}" in error.message
    assert "namespace 'team-a'" in error.message and "allowlists.default." in error.message
    # The configured value itself is fine.
    assert launch_params(cfg(), a_pod("team-a", **{name: configured}))


def test_every_warm_pools_parameters_are_allowed_too() -> None:
    params = launch_params(
        cfg(),
        a_pod(
            "x",
            **{
                "subnet-id": "subnet-0m",
                "key-pair": "mac-kp",
                "instance-type": "mac2.metal",
                "host-pool": "macs",
            },
        ),
    )
    assert (params.subnet_id, params.key_pair, params.instance_type) == ("subnet-0m", "mac-kp", "mac2.metal")


def test_the_default_allowlist_applies_to_every_namespace() -> None:
    s = cfg(allowlists={"default": {"subnets": ["subnet-0b"], "images": ["ami-0b"]}})
    for namespace in ("default", "team-a", "kube-system"):
        assert launch_params(s, a_pod(namespace, **{"subnet-id": "subnet-0b"})).subnet_id == "subnet-0b"
    assert refused(s, "team-a", **{"subnet-id": "subnet-0c"}).reason == "AnnotationNotAllowed"


def test_a_namespace_list_replaces_the_default_of_its_kind_and_inherits_the_others() -> None:
    s = cfg(
        allowlists={
            "default": {"subnets": ["subnet-0b"], "key_pairs": ["shared-kp"]},
            "namespaces": {"team-a": {"subnets": ["subnet-0t"]}},
        }
    )
    assert launch_params(s, a_pod("team-a", **{"subnet-id": "subnet-0t"})).subnet_id == "subnet-0t"
    error = refused(s, "team-a", **{"subnet-id": "subnet-0b"})
    assert "allowlists.namespaces.team-a.subnets" in error.message
    assert launch_params(s, a_pod("team-a", **{"key-pair": "shared-kp"})).key_pair == "shared-kp"
    # Another namespace does not get team-a's subnet.
    assert "namespace 'team-b'" in refused(s, "team-b", **{"subnet-id": "subnet-0t"}).message


def test_an_empty_namespace_list_allows_only_the_configured_values() -> None:
    s = cfg(allowlists={"default": {"images": ["ami-0b"]}, "namespaces": {"locked": {"images": []}}})
    assert refused(s, "locked", **{"image-id": "ami-0b"}).reason == "AnnotationNotAllowed"
    assert launch_params(s, a_pod("locked", **{"image-id": IMAGE})).image_id == IMAGE


def test_a_star_opens_one_kind_only() -> None:
    s = cfg(allowlists={"namespaces": {"lab": {"instance_types": ["*"]}}})
    assert launch_params(s, a_pod("lab", **{"instance-type": "p5.48xlarge"})).instance_type == "p5.48xlarge"
    assert refused(s, "lab", **{"subnet-id": "subnet-0evil"}).reason == "AnnotationNotAllowed"
    assert refused(s, "default", **{"instance-type": "p5.48xlarge"}).reason == "AnnotationNotAllowed"


def test_a_pod_without_namespace_is_checked_as_default() -> None:
    s = cfg(allowlists={"namespaces": {"default": {"subnets": ["subnet-0d"]}}})
    bare = {"metadata": {"uid": "u", "annotations": {f"{P}subnet-id": "subnet-0d"}}}
    assert launch_params(s, bare).subnet_id == "subnet-0d"


@pytest.mark.parametrize(
    ("allowlists", "fragment"),
    [
        ({"default": {"subnets": ["sg-0a"]}}, "allowlists.default.subnets: Value error, not a subnet ID"),
        ({"default": {"images": ["ami-0a", "ami-0a"]}}, "allowlists.default.images: a value is listed twice"),
        ({"namespaces": {"Team_A": {}}}, "allowlists.namespaces: namespace 'Team_A' is not a DNS label"),
        ({"default": {"amis": ["ami-0a"]}}, "allowlists.default.amis: unknown key"),
        ({"namespaces": {"a": {"instance_types": ["large"]}}}, "allowlists.namespaces.a.instance_types"),
    ],
)
def test_a_bad_allowlist_is_a_configuration_error_naming_the_key(
    tmp_path: Path, allowlists: dict[str, Any], fragment: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"allowlists": allowlists}))
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env={})
    text = str(info.value).replace("Value error, ", "")
    assert fragment.replace("Value error, ", "") in text, text


# --- through the lifecycle, on the in-memory fakes ------------------------------------------------


def test_the_pod_fails_with_a_warning_event_and_nothing_is_launched() -> None:
    world = World(settings())
    world.seed(spec=pod(annotations={f"{P}subnet-id": "subnet-0evil"}))

    assert world.step() is None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.FAILED, "AnnotationNotAllowed")
    assert "subnet-0evil" in rec.message and "namespace 'default'" in rec.message
    assert world.ec2.calls == []
    assert [(e.reason, e.event_type) for e in world.events] == [("AnnotationNotAllowed", "Warning")]


def test_an_update_to_a_value_not_allowed_changes_nothing() -> None:
    world = World(settings())
    instance = world.instance("running")
    world.seed(Phase.RUNNING, instance=instance)
    rec = world.rec
    rec.spec = pod(annotations={f"{P}key-pair": "someone-elses-kp"})
    world.store.put(rec)

    world.update()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.RUNNING, "AnnotationNotAllowed")
    assert world.ec2.calls == []
