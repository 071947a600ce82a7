"""Per-pod EC2 parameters: config defaults, the compute.amazonaws.com/* annotations, the warm-pool
rule, deterministic subnet choice, a stable fingerprint, and failures as InvalidPodSpec only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vkec2.config import Settings
from vkec2.config.allowlist import KINDS
from vkec2.contract import ANNOTATION_PREFIX
from vkec2.domain.launchopts import LaunchOptions
from vkec2.domain.podspec import ANNOTATIONS, LaunchParams, launch_params
from vkec2.errors import InvalidPodSpec

P = ANNOTATION_PREFIX
IMAGE = "ami-0123456789abcdef0"


def pod(
    annotations: Mapping[str, Any] | None = None, uid: str = "7d3c9a4e-0000-4000-8000-000000000001"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "uid": uid,
            "annotations": {f"{P}{k}": v for k, v in (annotations or {}).items()},
        }
    }


#: Every kind open: these tests are about parsing; tests/security/test_annotation_allowlist.py
#: tests the allowlists.
OPEN = {"default": {kind: ["*"] for kind in KINDS}}


def cfg(**overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "allowlists": OPEN,
        "ec2": {
            "image_id": IMAGE,
            "instance_type": "m5.large",
            "subnets": ["subnet-0a"],
            "security_groups": ["sg-0b", "sg-0a"],
            "instance_profile": "prof",
            "key_pair": "kp",
            "user_data": "IyEvYmluL3No",
            "tags": {"team": "build", "env": "prod"},
        },
    }
    raw.update(overrides)
    return Settings.model_validate(raw)


POOLS = [
    {
        "name": "mac",
        "instance_type": "c6g.metal",
        "image_id": "ami-0mac",
        "subnets": ["subnet-0m1", "subnet-0m2"],
        "security_groups": ["sg-0mac"],
        "instance_profile": "mac-prof",
        "key_pair": "mac-kp",
    },
    {"name": "bare", "instance_type": "c5.large"},  # inherits image, subnets, groups, profile, key pair
]


def failure(settings_: Settings, annotations: Mapping[str, Any]) -> InvalidPodSpec:
    with pytest.raises(InvalidPodSpec) as info:
        launch_params(settings_, pod(annotations))
    return info.value


# --- defaults and overrides ------------------------------------------------------------------


def test_defaults_come_from_config() -> None:
    params = launch_params(cfg(), pod())
    assert params == LaunchParams(
        image_id=IMAGE,
        instance_type="m5.large",
        subnet_id="subnet-0a",
        security_groups=("sg-0a", "sg-0b"),
        instance_profile="prof",
        key_pair="kp",
        user_data="IyEvYmluL3No",
        tags=(("env", "prod"), ("team", "build")),
        warm_pool=None,
    )


def test_every_annotation_overrides() -> None:
    params = launch_params(
        cfg(),
        pod(
            {
                "image-id": "ami-0beef",
                "instance-type": "c6g.metal",
                "subnet-id": "subnet-0z",
                "security-groups": " sg-02 , sg-01,sg-02",
                "instance-profile": "arn:aws:iam::123456789012:instance-profile/x",
                "key-pair": "other",
                "tags": '{"team": "ios", "cost": "42"}',
            }
        ),
    )
    assert params.image_id == "ami-0beef"
    assert params.instance_type == "c6g.metal"
    assert params.subnet_id == "subnet-0z"
    assert params.security_groups == ("sg-01", "sg-02")
    assert params.instance_profile == "arn:aws:iam::123456789012:instance-profile/x"
    assert params.key_pair == "other"
    assert params.tags == (("cost", "42"), ("env", "prod"), ("team", "ios"))
    assert params.warm_pool is None


def test_pod_without_metadata_or_annotations_uses_defaults() -> None:
    assert launch_params(cfg(), {}).image_id == IMAGE
    assert launch_params(cfg(), {"metadata": {"annotations": None}}).image_id == IMAGE


def test_missing_image() -> None:
    error = failure(Settings(), {})
    assert error.reason == "MissingImage"
    assert f"{P}image-id" in error.message and "ec2.image_id" in error.message
    open_images = Settings.model_validate({"allowlists": {"default": {"images": ["*"]}}})
    assert launch_params(open_images, pod({"image-id": "ami-01"})).image_id == "ami-01"


# --- malformed annotations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("image-id", "ubuntu-22.04", "is not an AMI ID"),
        ("instance-type", "large", "is not an instance type"),
        ("subnet-id", "sn-1", "is not a subnet ID"),
        ("security-groups", "sg-1,default", "'default' is not a security group ID"),
        ("security-groups", "sg-1,,sg-2", "'' is not a security group ID"),
        ("instance-profile", "my profile", "is not an instance profile"),
        ("key-pair", "tab\tkey", "is not a key pair name"),
        ("tags", "team=ios", "not a JSON object of strings"),
        ("tags", '["a"]', "not a JSON object of strings"),
        ("tags", '{"a": 1}', "not a JSON object of strings"),
        ("tags", '{"aws:cloudformation:stack": "x"}', "reserved prefix 'aws:'"),
        ("tags", '{"AWS:x": "x"}', "reserved prefix 'aws:'"),
        ("tags", '{"vkec2.io/pod-uid": "x"}', "reserved prefix 'vkec2.io/'"),
        ("tags", '{"' + "k" * 129 + '": "v"}', "longer than 128"),
        ("tags", '{"k": "' + "v" * 257 + '"}', "longer than 256"),
        ("tags", '{"": "v"}', "empty tag key"),
        ("tags", "{" + ",".join(f'"k{i}": "v"' for i in range(40)) + "}", "at most 40 user tags"),
        ("key-pair", "  ", "empty value"),
        ("image-id", 5, "not a string"),
        ("instance-types", "m5.large,,c5.large", "'' is not an instance type"),
        ("instance-types", "m5.large, large", "'large' is not an instance type"),
        ("instance-types", "m5.large,c5.large,m5.large", "listed twice"),
        ("instance-types", ",".join(f"m{i}.large" for i in range(11)), "11 instance types; at most 10"),
    ],
)
def test_malformed_annotation(name: str, value: Any, fragment: str) -> None:
    error = failure(cfg(), {name: value})
    assert error.reason == "InvalidAnnotation"
    assert error.message.startswith(f"annotation {P}{name}: ")
    assert fragment in error.message


def test_limits_are_inclusive() -> None:
    tags = '{"' + "k" * 128 + '": "' + "v" * 256 + '"}'
    assert launch_params(cfg(ec2={"image_id": IMAGE}), pod({"image-id": IMAGE, "tags": tags})).tags == (
        ("k" * 128, "v" * 256),
    )


def test_unknown_annotation_under_the_prefix_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    assert launch_params(cfg(), pod({"imageid": "nonsense"})).image_id == IMAGE
    assert f"{P}imageid" in caplog.text


# --- warm pools ------------------------------------------------------------------------------


def test_named_pool_is_the_base() -> None:
    params = launch_params(cfg(warm_pools=POOLS), pod({"warm-pool": "mac", "tags": '{"x": "y"}'}))
    assert (params.warm_pool, params.image_id, params.instance_type) == ("mac", "ami-0mac", "c6g.metal")
    assert params.subnet_id in {"subnet-0m1", "subnet-0m2"}
    assert params.security_groups == ("sg-0mac",)
    assert (params.instance_profile, params.key_pair) == ("mac-prof", "mac-kp")
    assert params.user_data == "IyEvYmluL3No"
    assert ("x", "y") in params.tags


def test_pool_inherits_unset_fields_from_ec2() -> None:
    params = launch_params(cfg(warm_pools=POOLS), pod({"warm-pool": "bare"}))
    assert (params.image_id, params.instance_type, params.subnet_id) == (IMAGE, "c5.large", "subnet-0a")
    assert params.security_groups == ("sg-0a", "sg-0b")
    assert (params.instance_profile, params.key_pair) == ("prof", "kp")


def test_unknown_pool_lists_the_configured_ones() -> None:
    error = failure(cfg(warm_pools=POOLS), {"warm-pool": "linux"})
    assert error.reason == "UnknownWarmPool"
    assert "'linux'" in error.message and "mac, bare" in error.message
    assert "configured: none" in failure(cfg(), {"warm-pool": "mac"}).message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("image-id", "ami-0other"),
        ("instance-type", "mac1.metal"),
        ("subnet-id", "subnet-0a"),
        ("security-groups", "sg-0a"),
        ("instance-profile", "prof"),
        ("key-pair", "kp"),
    ],
)
def test_annotation_contradicting_the_named_pool(name: str, value: str) -> None:
    error = failure(cfg(warm_pools=POOLS), {"warm-pool": "mac", name: value})
    assert error.reason == "InvalidAnnotation"
    assert error.message.startswith(f"annotation {P}{name}: ")
    assert "contradicts warm pool 'mac'" in error.message


def test_annotations_restating_the_pool_are_fine() -> None:
    params = launch_params(
        cfg(warm_pools=POOLS),
        pod(
            {
                "warm-pool": "mac",
                "image-id": "ami-0mac",
                "instance-type": "c6g.metal",
                "subnet-id": "subnet-0m2",
                "security-groups": "sg-0mac",
                "instance-profile": "mac-prof",
                "key-pair": "mac-kp",
            }
        ),
    )
    assert (params.warm_pool, params.subnet_id) == ("mac", "subnet-0m2")


def test_default_pool_is_first_or_configured() -> None:
    assert launch_params(cfg(warm_pools=POOLS), pod()).warm_pool == "mac"
    params = launch_params(cfg(warm_pools=POOLS, default_warm_pool="bare"), pod({"tags": '{"a": "b"}'}))
    assert (params.warm_pool, params.instance_type) == ("bare", "c5.large")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("image-id", "ami-0x"),
        ("instance-type", "t3.micro"),
        ("subnet-id", "subnet-0q"),
        ("security-groups", "sg-0q"),
        ("instance-profile", "p2"),
        ("key-pair", "k2"),
    ],
)
def test_any_launch_override_means_a_cold_launch(name: str, value: str) -> None:
    params = launch_params(cfg(warm_pools=POOLS), pod({name: value}))
    assert params.warm_pool is None
    assert params.image_id == (value if name == "image-id" else IMAGE)  # ec2 defaults, not the pool's


# --- determinism -----------------------------------------------------------------------------


def test_subnet_is_picked_from_the_uid_deterministically() -> None:
    s = cfg(ec2={"image_id": IMAGE, "subnets": ["subnet-01", "subnet-02", "subnet-03"]})
    picks = {launch_params(s, pod(uid=f"uid-{i}")).subnet_id for i in range(60)}
    assert picks == {"subnet-01", "subnet-02", "subnet-03"}
    for i in range(10):
        assert launch_params(s, pod(uid=f"uid-{i}")) == launch_params(s, pod(uid=f"uid-{i}"))


def test_fingerprint_is_short_stable_and_covers_every_field() -> None:
    base = launch_params(cfg(), pod())
    assert len(base.fingerprint()) == 16 and int(base.fingerprint(), 16) >= 0
    assert base.fingerprint() == launch_params(cfg(), pod()).fingerprint()
    assert base.fingerprint() == "432f2d4b19d23a58"  # pinned: must not change between releases
    changes: dict[str, Any] = {
        "image_id": "ami-09",
        "instance_type": "t3.nano",
        "subnet_id": None,
        "security_groups": (),
        "instance_profile": None,
        "key_pair": None,
        "user_data": None,
        "tags": (),
        "warm_pool": "mac",
        "fallback_types": ("m5a.large",),
        "fallback_subnets": ("subnet-0z",),
        "launch": LaunchOptions(hop_limit=3),
        "capacity_type": "spot",
        "spot_max_price": "0.05",
        "host_pool": "macs",
        "host_id": "h-0123456789abcdef0",
        "tenancy": "host",
        "host_resource_group_arn": "arn:aws:resource-groups:us-west-2:123456789012:group/macs",
    }
    # image_note (the images the image table does not map) is a report, not a launch parameter.
    assert set(changes) == {f.name for f in dataclasses.fields(LaunchParams)} - {"image_note"}
    assert dataclasses.replace(base, image_note="x").fingerprint() == base.fingerprint()
    prints = {dataclasses.replace(base, **{k: v}).fingerprint() for k, v in changes.items()}
    assert len(prints) == len(changes) and base.fingerprint() not in prints


@given(st.permutations(["sg-01", "sg-02", "sg-03"]), st.permutations([("a", "1"), ("b", "2"), ("c", "3")]))
def test_fingerprint_ignores_the_order_annotations_are_written_in(
    groups: list[str], tags: list[tuple[str, str]]
) -> None:
    tag_json = "{" + ", ".join(f'"{k}": "{v}"' for k, v in tags) + "}"
    params = launch_params(cfg(), pod({"security-groups": ",".join(groups), "tags": tag_json}))
    in_order = {"security-groups": "sg-01,sg-02,sg-03", "tags": '{"a":"1","b":"2","c":"3"}'}
    reference = launch_params(cfg(), pod(in_order))
    assert params.fingerprint() == reference.fingerprint()


SETTINGS_WITH_POOLS = cfg(warm_pools=POOLS)
annotation_names = st.sampled_from([*ANNOTATIONS, "other"])
annotation_values = st.one_of(
    st.text(),
    st.sampled_from(
        ["ami-0mac", "c6g.metal", "subnet-0m1", "sg-0mac", "mac", "bare", "{}", '{"k": "v"}', "sg-01, sg-02"]
    ),
    st.integers(),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(annotation_names, annotation_values, max_size=5), st.text(max_size=40))
def test_arbitrary_annotations_only_ever_raise_invalid_pod_spec(
    annotations: dict[str, Any], uid: str
) -> None:
    try:
        params = launch_params(SETTINGS_WITH_POOLS, pod(annotations, uid=uid))
    except InvalidPodSpec as exc:
        assert exc.reason in {"InvalidAnnotation", "UnknownWarmPool", "MissingImage", "UnknownHostPool"}
        assert exc.message
    else:
        assert params == launch_params(SETTINGS_WITH_POOLS, pod(annotations, uid=uid))
        assert len(params.fingerprint()) == 16


def test_agent_installer_is_the_user_data_when_only_the_bootstrap_artifact_is_configured() -> None:
    settings = Settings.model_validate(
        {
            "ec2": {"image_id": "ami-0abc1234"},
            "bootstrap": {"s3_bucket": "vk-agents", "s3_key": "agent.tgz"},
            "agent": {"port": 8300},
            "allowlists": {"default": {"instance_types": ["mac2.metal"]}},
            "host_pools": [
                {"name": "macs", "instance_type": "mac2.metal", "availability_zones": ["us-west-2a"]}
            ],
        }
    )
    linux = launch_params(settings, {"metadata": {"uid": "u1"}})
    assert linux.user_data is not None and "s3://vk-agents/agent.tgz" in linux.user_data
    assert "systemd" in linux.user_data and "8300" in linux.user_data and "--insecure" in linux.user_data
    mac = launch_params(
        settings,
        {"metadata": {"uid": "u1", "annotations": {"compute.amazonaws.com/host-pool": "macs"}}},
    )
    assert mac.user_data is not None and "launchd" in mac.user_data.lower()
    explicit = Settings.model_validate(
        {**settings.model_dump(), "ec2": {"image_id": "ami-0abc1234", "user_data": "#!/bin/sh\necho mine"}}
    )
    assert launch_params(explicit, {"metadata": {"uid": "u1"}}).user_data == "#!/bin/sh\necho mine"
    assert (
        launch_params(
            Settings.model_validate({"ec2": {"image_id": "ami-0abc1234"}}), {"metadata": {"uid": "u1"}}
        ).user_data
        is None
    )


# --- capacity fallbacks ------------------------------------------------------------------------


def test_instance_types_annotation_lists_the_types_in_order() -> None:
    params = launch_params(cfg(), pod({"instance-types": " c6i.large , c5.large,m5.large "}))
    assert (params.instance_type, params.fallback_types) == ("c6i.large", ("c5.large", "m5.large"))
    both = launch_params(cfg(), pod({"instance-types": "c6i.large,c5.large", "instance-type": "c5.large"}))
    assert (both.instance_type, both.fallback_types) == ("c5.large", ("c6i.large",))
    assert launch_params(cfg(), pod({"instance-type": "c5.large"})).fallback_types == ()
    assert "instance-types" in ANNOTATIONS


def test_alternative_types_come_from_ec2_or_the_pool() -> None:
    ec2 = {"image_id": IMAGE, "instance_types": ["m5a.large", "m5.large"]}
    assert launch_params(cfg(ec2=ec2), pod()).fallback_types == ("m5a.large",)
    pools = [{"name": "mac", "instance_type": "c6g.metal", "instance_types": ["c7g.metal"]}]
    params = launch_params(cfg(ec2=ec2, warm_pools=pools), pod({"warm-pool": "mac"}))
    assert (params.instance_type, params.fallback_types) == ("c6g.metal", ("c7g.metal",))
    restated = pod({"warm-pool": "mac", "instance-types": "c6g.metal,c7g.metal"})
    assert launch_params(cfg(warm_pools=pools), restated).fallback_types == ("c7g.metal",)
    error = failure(cfg(warm_pools=pools), {"warm-pool": "mac", "instance-types": "c7g.metal"})
    assert "contradicts warm pool 'mac' (instance types c6g.metal, c7g.metal)" in error.message


def test_instance_types_is_a_launch_override() -> None:
    params = launch_params(cfg(warm_pools=POOLS), pod({"instance-types": "c5.large"}))
    assert params.warm_pool is None


def test_the_other_subnets_follow_the_picked_one() -> None:
    s = cfg(ec2={"image_id": IMAGE, "subnets": ["subnet-01", "subnet-02", "subnet-03"]})
    for i in range(20):
        params = launch_params(s, pod(uid=f"uid-{i}"))
        assert params.subnet_id is not None
        order = [params.subnet_id, *params.fallback_subnets]
        assert sorted(order) == ["subnet-01", "subnet-02", "subnet-03"]
        start = ["subnet-01", "subnet-02", "subnet-03"].index(order[0])
        assert order == (["subnet-01", "subnet-02", "subnet-03"] * 2)[start : start + 3]
    pinned = launch_params(s, pod({"subnet-id": "subnet-09"}))
    assert (pinned.subnet_id, pinned.fallback_subnets) == ("subnet-09", ())
