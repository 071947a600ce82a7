"""Dedicated-host pools: the config section, the host state machine and the release rules (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from vkec2.config import Settings, load_config
from vkec2.config.hosts import MAC_MINIMUM_ALLOCATION_SECONDS, HostPool
from vkec2.contract import TAG_HOST_POOL
from vkec2.domain.hosts import (
    EC2_AVAILABLE,
    EC2_PENDING,
    HostEvent,
    HostRecord,
    HostState,
    describe_wait,
    free_hosts,
    observed,
    releasable,
    to_allocate,
    to_release,
    transition,
)
from vkec2.domain.podspec import launch_params
from vkec2.errors import InvalidPodSpec

DAY = 86400.0
#: Agents over TLS, so loading says nothing about plaintext (tests/unit/test_config_transport.py).
TLS_ENV = {"VKEC2_AGENT__TLS": json.dumps({"ca_cert_file": "/etc/vkec2/ca/ca.crt"})}
MACS = {"name": "macs", "instance_type": "mac2.metal", "availability_zones": ["us-west-2a", "us-west-2b"]}


def pool(**overrides: Any) -> HostPool:
    return HostPool.model_validate({**MACS, **overrides})


def host(host_id: str = "h-1", **overrides: Any) -> HostRecord:
    values: dict[str, Any] = {
        "host_id": host_id,
        "pool": "macs",
        "zone": "us-west-2a",
        "ec2_state": EC2_AVAILABLE,
        "allocated_at": 1000.0,
        "minimum": DAY,
    }
    return HostRecord(**{**values, **overrides})


# -- config -------------------------------------------------------------------------------------


def test_a_mac_pool_keeps_aws_minimum_and_one_slot() -> None:
    macs = pool()
    assert (macs.mac, macs.minimum_allocation, macs.instances_per_host) == (True, DAY, 1)
    assert macs.expected_scrub_seconds == 6600  # Apple silicon: up to 110 minutes
    assert pool(instance_type="mac1.metal").expected_scrub_seconds == 3000  # x86: up to 50 minutes
    assert pool(minimum_allocation_seconds=2 * DAY).minimum_allocation == 2 * DAY
    for bad, words in (
        ({"minimum_allocation_seconds": 3600}, "shorter than AWS's 24-hour minimum"),
        ({"instances_per_host": 2}, "one instance"),
        ({"min_hosts": 3, "max_hosts": 2}, "min_hosts (3) exceeds max_hosts (2)"),
        ({"instance_family": "mac2"}, "exactly one of instance_type and instance_family"),
        ({"availability_zones": []}, "set availability_zones or subnets"),
        ({"availability_zones": ["us-west-2"]}, "not an Availability Zone"),
        ({"name": "Macs"}, "not a DNS label"),
        ({"release": {"keep_warm": 5}}, "keep_warm (5) exceeds max_hosts (1)"),
    ):
        with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
            pool(**bad)
    assert pool(instance_type=None, instance_family="c5", instances_per_host=4).minimum_allocation == 0


def test_settings_check_which_host_pool_each_launch_target_names() -> None:
    on_macs = {"instance_type": "mac2.metal", "host_pool": "macs"}
    base: dict[str, Any] = {"host_pools": [MACS], "ec2": on_macs}
    assert Settings.model_validate(base).host_pool("macs") is not None
    cases = (
        ({**base, "ec2": {"host_pool": "nope"}}, "no host pool named 'nope' (configured: macs)"),
        ({**base, "ec2": {"host_pool": "macs"}}, "instance type m5.large does not run on host pool 'macs'"),
        (
            {**base, "warm_pools": [{"name": "w", "instance_type": "mac2.metal", "desired_count": 1}]},
            "warm pools on Dedicated Hosts cannot pre-launch",
        ),
        ({"host_pools": [MACS, MACS]}, "duplicate host pool name 'macs'"),
        (
            {**base, "ec2": {**on_macs, "capacity_type": "spot"}},
            "capacity_type spot on host pool 'macs': EC2 runs only on-demand instances on Dedicated Hosts",
        ),
    )
    for raw, words in cases:
        with pytest.raises(ValidationError) as info:
            Settings.model_validate(raw)
        assert words in str(info.value)
    warm = Settings.model_validate({**base, "warm_pools": [{"name": "w", "instance_type": "mac2.metal"}]})
    assert warm.pool_launch_defaults(warm.warm_pools[0]).host_pool == "macs"


def test_a_pod_selects_a_host_pool_by_annotation_or_inherits_one() -> None:
    settings = Settings.model_validate({"ec2": {"image_id": "ami-0abc"}, "host_pools": [MACS]})

    def pod(**annotations: str) -> dict[str, Any]:
        ann = {f"compute.amazonaws.com/{k}": v for k, v in annotations.items()}
        return {"metadata": {"uid": "u1", "namespace": "default", "annotations": ann}}

    params = launch_params(settings, pod(**{"host-pool": "macs"}))
    assert (params.host_pool, params.instance_type, params.host_id, params.tenancy) == (
        "macs",
        "mac2.metal",
        "",
        "",
    )
    assert launch_params(settings, pod()).host_pool == ""
    allowed = Settings.model_validate(
        {
            **settings.model_dump(),
            "allowlists": {
                "default": {"instance_types": ["mac2.metal", "c5.large"], "capacity_types": ["spot"]}
            },
        }
    )
    for given, reason in (
        ({"instance-type": "mac2.metal"}, "HostPoolRequired"),
        ({"host-pool": "others"}, "UnknownHostPool"),
        ({"host-pool": "macs", "instance-type": "c5.large"}, "HostPoolCannotFit"),
        ({"host-pool": "macs", "capacity-type": "spot"}, "HostPoolCannotFit"),
    ):
        with pytest.raises(InvalidPodSpec) as info:
            launch_params(allowed, pod(**given))
        assert info.value.reason == reason, info.value.message


# -- the state machine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        (HostState.AVAILABLE, HostEvent.CLAIMED, HostState.OCCUPIED),
        (HostState.OCCUPIED, HostEvent.INSTANCE_GONE, HostState.SCRUBBING),
        (HostState.SCRUBBING, HostEvent.SCRUBBED, HostState.AVAILABLE),
        (HostState.AVAILABLE, HostEvent.RELEASED, HostState.RELEASED),
        (HostState.AVAILABLE, HostEvent.FAILED, HostState.UNUSABLE),
        (HostState.OCCUPIED, HostEvent.FAILED, HostState.UNUSABLE),
        (HostState.SCRUBBING, HostEvent.FAILED, HostState.UNUSABLE),
        (HostState.UNUSABLE, HostEvent.SCRUBBED, HostState.AVAILABLE),
        (HostState.UNUSABLE, HostEvent.RELEASED, HostState.RELEASED),
        # events that mean nothing in a state leave it alone: an occupied host is never released
        (HostState.OCCUPIED, HostEvent.RELEASED, HostState.OCCUPIED),
        (HostState.SCRUBBING, HostEvent.CLAIMED, HostState.SCRUBBING),
        (HostState.RELEASED, HostEvent.SCRUBBED, HostState.RELEASED),
    ],
)
def test_each_transition(state: HostState, event: HostEvent, after: HostState) -> None:
    assert transition(state, event) is after


def test_the_record_derives_its_state_from_ec2_and_the_claims() -> None:
    assert host().state is HostState.AVAILABLE
    assert host(claims={"pod-1": 5.0}).state is HostState.OCCUPIED
    assert host(instances=("i-1",)).state is HostState.OCCUPIED  # an instance with no claim of ours
    assert host(ec2_state=EC2_PENDING).state is HostState.SCRUBBING
    assert host(scrubbing_since=9.0).state is HostState.SCRUBBING  # the fleet saw its instance go
    assert host(ec2_state="under-assessment").state is HostState.UNUSABLE
    assert host(ec2_state="permanent-failure").state is HostState.UNUSABLE
    assert host(ec2_state="released").state is HostState.RELEASED
    c5 = host(slots=2, claims={"a": 1.0})
    assert (
        c5.state is HostState.AVAILABLE
        and host(slots=2, claims={"a": 1.0, "b": 1.0}).state is HostState.OCCUPIED
    )
    # only available hosts are ever chosen, oldest first
    hosts = [host("h-3", allocated_at=3), host("h-1", ec2_state=EC2_PENDING), host("h-2", allocated_at=2)]
    assert [h.host_id for h in free_hosts(hosts)] == ["h-2", "h-3"]


def test_describe_hosts_answers_are_merged_keeping_claims() -> None:
    macs = pool()
    desc = {
        "HostId": "h-1",
        "AvailabilityZone": "us-west-2a",
        "State": EC2_PENDING,
        "AllocationTime": "2026-01-01T00:00:00+00:00",
        "Instances": [],
        "Tags": [{"Key": TAG_HOST_POOL, "Value": "macs"}],
    }
    scrubbing = observed(host(claims={"p": 1.0}), desc, macs, now=100.0)
    assert scrubbing.state is HostState.SCRUBBING and scrubbing.scrubbing_since == 100.0
    assert scrubbing.claims == {"p": 1.0} and scrubbing.allocated_at == 1767225600.0
    done = observed(scrubbing, {**desc, "State": EC2_AVAILABLE}, macs, now=200.0)
    assert done.scrubbing_since == 0.0 and done.state is HostState.OCCUPIED  # the pod still claims it
    idle = observed(host(scrubbing_since=50.0), {**desc, "State": EC2_AVAILABLE}, macs, now=300.0)
    assert idle.state is HostState.AVAILABLE and idle.idle_since == 300.0
    still = observed(idle, {**desc, "State": EC2_AVAILABLE}, macs, now=400.0)
    assert still.idle_since == 300.0
    busy = observed(
        still, {**desc, "State": EC2_AVAILABLE, "Instances": [{"InstanceId": "i-9"}]}, macs, 500.0
    )
    assert busy.state is HostState.OCCUPIED and busy.idle_since == 0.0


# -- release and allocation rules ------------------------------------------------------------------


def test_never_released_before_the_minimum_allocation_then_after_the_idle_time() -> None:
    macs = pool(release={"idle_seconds": 600})
    idle = host(idle_since=1000.0)
    assert idle.releasable_at == 1000.0 + MAC_MINIMUM_ALLOCATION_SECONDS
    assert not releasable(idle, macs, now=1000.0 + DAY - 1)
    assert releasable(idle, macs, now=1000.0 + DAY)  # idle for a day: past the idle time too
    late = host(idle_since=1000.0 + DAY)  # went idle only at the end of the minimum
    assert not releasable(late, macs, now=1000.0 + DAY + 599)
    assert releasable(late, macs, now=1000.0 + DAY + 600)
    assert not releasable(host(claims={"p": 1.0}), macs, now=10 * DAY)
    assert not releasable(host(ec2_state=EC2_PENDING, idle_since=1.0), macs, now=10 * DAY)


def test_keep_warm_and_min_hosts_limit_what_is_released() -> None:
    now = 10 * DAY
    idle = [host(f"h-{n}", allocated_at=float(n), idle_since=1.0) for n in range(1, 4)]
    busy = host("h-9", claims={"p": 1.0})
    assert [h.host_id for h in to_release([*idle, busy], pool(max_hosts=4), now)] == ["h-1", "h-2", "h-3"]
    warm = pool(max_hosts=4, release={"keep_warm": 1})
    assert [h.host_id for h in to_release([*idle, busy], warm, now)] == ["h-1", "h-2"]
    floor = pool(max_hosts=4, min_hosts=3)
    assert [h.host_id for h in to_release([*idle, busy], floor, now)] == ["h-1"]
    assert to_allocate([busy], floor) == 2 and to_allocate([*idle, busy], floor) == 0


def test_the_waiting_message_names_every_host_and_the_max() -> None:
    macs = pool(max_hosts=2)
    hosts = [host("h-1", claims={"pod-a": 1.0}), host("h-2", ec2_state=EC2_PENDING, scrubbing_since=40.0)]
    text = describe_wait(hosts, macs, now=100.0)
    assert (
        "h-1 occupied by pod-a" in text
        and "h-2 scrubbing since 1970-01-01T00:00:40Z (takes up to 6600s)" in text
    )
    assert text.endswith("(2 of max 2 hosts allocated)")


def test_a_mac_target_without_a_host_pool_is_warned_about_when_loading(tmp_path: Any) -> None:
    config = tmp_path / "vkec2.yaml"
    config.write_text(
        "ec2: {instance_type: mac2.metal}\n"
        "warm_pools: [{name: linux, instance_type: c5.large}, {name: builders, instance_type: mac1.metal}]\n"
    )
    warnings = [w for w in load_config(str(config), env=TLS_ENV).warnings if "Dedicated Host" in w]
    assert [w.split(":")[0] for w in warnings] == ["ec2", "warm pool 'builders'"]
    assert all("HostPoolRequired" in w for w in warnings)
    config.write_text(
        f"host_pools: [{json.dumps(MACS)}]\nec2: {{instance_type: mac2.metal, host_pool: macs}}\n"
    )
    assert not [w for w in load_config(str(config), env=TLS_ENV).warnings if "Dedicated Host" in w]
