"""The ``host_pools`` section: named pools of EC2 Dedicated Hosts that pods (Mac ones above all) launch on.

AWS runs Mac instances only on Dedicated Hosts: a host is allocated (``AllocateHosts``), one Mac
instance runs on it at a time, it is scrubbed (EC2 state ``pending``) after each instance stops or
terminates, and it cannot be released before 24 hours have passed since its allocation. A
:class:`HostPool` says which hosts the fleet may allocate (instance type or family, the
Availability Zones in order, at least ``min_hosts`` and at most ``max_hosts``), how (auto
placement, host recovery, tags, an optional host resource group to launch into) and when it
releases an idle one (:class:`HostReleasePolicy`). A pod selects a pool with the
``compute.amazonaws.com/host-pool`` annotation, a warm pool with its ``host_pool`` field, every
other pod with ``ec2.host_pool``; the rules that use these values are :mod:`vkec2.domain.hosts`.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from vkec2.config.launch import Ec2Defaults, WarmPool
from vkec2.config.shapes import (
    INSTANCE_FAMILY_RE,
    Section,
    check_instance_type,
    check_pool_name,
    check_subnets,
    tags_problem,
)
from vkec2.contract import ON_DEMAND

#: AWS's minimum allocation period of a Mac Dedicated Host (24 hours); a pool may only lengthen it.
#: Why a host pool launch is on-demand only (AWS: no Spot instance runs on a Dedicated Host).
ON_HOSTS_ONLY = "EC2 runs only on-demand instances on Dedicated Hosts (no Spot)"
MAC_MINIMUM_ALLOCATION_SECONDS = 86400.0
#: How long AWS documents a Mac host's scrubbing may take after its instance stops or terminates:
#: up to 50 minutes for x86 (mac1, up to 3 hours with a firmware update), up to 110 minutes for
#: Apple silicon (mac2 and later). The fleet does not wait for this figure (it watches the host's
#: EC2 state); it shows it in a waiting pod's message.
MAC_SCRUB_SECONDS = {"mac1": 3000.0}
MAC_APPLE_SILICON_SCRUB_SECONDS = 6600.0
#: Service Quotas codes (service ``ec2``) of the account's running Dedicated Hosts per Mac family, as
#: Service Quotas lists them ("Running Dedicated mac2 Hosts" ...). The quota refresh reads the code of
#: each host pool's family unless ``quotas.host_codes`` names another; check yours with
#: ``aws service-quotas list-service-quotas --service-code ec2``.
MAC_HOST_QUOTA_CODES = {
    "mac1": "L-A8448DC5",
    "mac2": "L-5D8DADF5",
    "mac2-m1ultra": "L-AE4D744C",
    "mac2-m2": "L-B90B5B66",
    "mac2-m2pro": "L-14F120D1",
}
_ZONE_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]")
_HOST_GROUP_ARN_RE = re.compile(r"arn:aws[a-z-]*:resource-groups:[a-z0-9-]+:\d{12}:group/[\w.-]{1,300}")


def is_mac(instance_type_or_family: str) -> bool:
    """Whether an instance type (``mac2.metal``) or family (``mac2``) is a Mac, which needs a host."""
    return instance_type_or_family.startswith("mac")


def family_of(instance_type: str) -> str:
    """The instance family of a type: ``mac2`` for ``mac2.metal``."""
    return instance_type.split(".", 1)[0]


class HostReleasePolicy(Section):
    """When an idle host is released: never before its minimum allocation; then after ``idle_seconds``."""

    idle_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long a host past its minimum allocation period stays idle before it is released.",
    )
    keep_warm: int = Field(default=0, ge=0, description="Idle hosts kept allocated however long they idle.")


class HostPool(Section):
    """A named pool of Dedicated Hosts of one instance type (or family) the fleet allocates and releases."""

    name: str
    instance_type: str | None = None
    instance_family: str | None = None
    availability_zones: list[str] = Field(
        default_factory=list,
        description="Zones to allocate hosts in, tried in order (InsufficientHostCapacity moves on).",
    )
    subnets: list[str] = Field(
        default_factory=list,
        description="Subnets to launch in; a host's instance goes to the first subnet in its zone.",
    )
    min_hosts: int = Field(default=0, ge=0)
    max_hosts: int = Field(default=1, ge=0)
    auto_placement: bool = False
    host_recovery: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    release: HostReleasePolicy = Field(default_factory=HostReleasePolicy)
    minimum_allocation_seconds: float | None = Field(
        default=None,
        gt=0,
        description="The allocation period before which a host is never released (Mac: 24 h, only longer).",
    )
    instances_per_host: int = Field(default=1, ge=1, description="Instance slots of one host (Mac: 1).")
    host_resource_group_arn: str | None = None
    scrub_seconds: float | None = Field(
        default=None,
        ge=0,
        description="The expected scrubbing time after an instance (shown to waiting pods).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_pool_name(value, "host pool")

    @field_validator("instance_type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        return check_instance_type(value) if value is not None else None

    @field_validator("instance_family")
    @classmethod
    def _family(cls, value: str | None) -> str | None:
        if value is not None and not INSTANCE_FAMILY_RE.fullmatch(value):
            raise ValueError(f"not an instance family like mac2: {value!r}")
        return value

    @field_validator("availability_zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        for zone in value:
            if not _ZONE_RE.fullmatch(zone):
                raise ValueError(f"not an Availability Zone like us-west-2a: {zone!r}")
        if len(set(value)) != len(value):
            raise ValueError("an Availability Zone is listed twice")
        return value

    _subnets = field_validator("subnets")(check_subnets)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problem = tags_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("host_resource_group_arn")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_GROUP_ARN_RE.fullmatch(value):
            raise ValueError(
                "not a host resource group ARN like "
                f"arn:aws:resource-groups:us-west-2:123456789012:group/macs: {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HostPool:
        if (self.instance_type is None) == (self.instance_family is None):
            raise ValueError(f"host pool {self.name!r}: set exactly one of instance_type and instance_family")
        if not (self.availability_zones or self.subnets):
            raise ValueError(
                f"host pool {self.name!r}: set availability_zones or subnets (where hosts are allocated)"
            )
        if self.min_hosts > self.max_hosts:
            raise ValueError(
                f"host pool {self.name!r}: min_hosts ({self.min_hosts}) exceeds max_hosts ({self.max_hosts})"
            )
        if self.release.keep_warm > self.max_hosts:
            raise ValueError(
                f"host pool {self.name!r}: release.keep_warm ({self.release.keep_warm}) exceeds "
                f"max_hosts ({self.max_hosts})"
            )
        if self.mac:
            if self.instances_per_host != 1:
                raise ValueError(
                    f"host pool {self.name!r}: a Mac host runs one instance (instances_per_host 1)"
                )
            if self.instance_family is not None:
                raise ValueError(
                    f"host pool {self.name!r}: a Mac host pool names its instance_type (e.g. mac2.metal)"
                )
            minimum = self.minimum_allocation_seconds
            if minimum is not None and minimum < MAC_MINIMUM_ALLOCATION_SECONDS:
                raise ValueError(
                    f"host pool {self.name!r}: minimum_allocation_seconds ({minimum:g}) is shorter than "
                    f"AWS's 24-hour minimum for Mac hosts ({MAC_MINIMUM_ALLOCATION_SECONDS:g}); "
                    "it may only be longer"
                )
        return self

    @property
    def family(self) -> str:
        """The instance family of the pool's hosts (``mac2`` for ``mac2.metal``)."""
        return self.instance_family or family_of(self.instance_type or "")

    @property
    def mac(self) -> bool:
        return is_mac(self.family)

    @property
    def minimum_allocation(self) -> float:
        """Seconds after its allocation before which a host of this pool is never released."""
        if self.minimum_allocation_seconds is not None:
            return self.minimum_allocation_seconds
        return MAC_MINIMUM_ALLOCATION_SECONDS if self.mac else 0.0

    @property
    def expected_scrub_seconds(self) -> float:
        """The scrubbing time a waiting pod is told to expect (configured, else AWS's documented one)."""
        if self.scrub_seconds is not None:
            return self.scrub_seconds
        if not self.mac:
            return 0.0
        return MAC_SCRUB_SECONDS.get(self.family, MAC_APPLE_SILICON_SCRUB_SECONDS)

    def fits(self, instance_type: str) -> bool:
        """Whether an instance of ``instance_type`` can run on this pool's hosts."""
        if self.instance_type is not None:
            return instance_type == self.instance_type
        return family_of(instance_type) == self.instance_family


def check_host_pools(pools: list[HostPool]) -> list[HostPool]:
    """Pool names are unique."""
    seen: dict[str, int] = {}
    for index, pool in enumerate(pools):
        if pool.name in seen:
            raise ValueError(
                f"duplicate host pool name {pool.name!r} (entries {seen[pool.name]} and {index})"
            )
        seen[pool.name] = index
    return pools


def check_host_pool_refs(pools: list[HostPool], ec2: Ec2Defaults, warm_pools: list[WarmPool]) -> None:
    """``ec2.host_pool`` and every warm pool's ``host_pool`` name a host pool whose hosts fit their
    type, and launch on-demand (EC2 runs no Spot instance on a Dedicated Host).

    A warm pool on hosts launches nothing ahead (``desired_count`` 0): it names launch parameters
    for the pods that select it; pre-launched members would hold host slots and are not supported.
    """
    by_name = {pool.name: pool for pool in pools}
    configured = ", ".join(by_name) or "none"
    targets: list[tuple[str, str | None, str, int, str]] = [
        ("ec2", ec2.host_pool, ec2.instance_type, 0, ec2.capacity_type)
    ]
    for warm in warm_pools:
        name = warm.host_pool or ec2.host_pool
        targets.append(
            (f"warm pool {warm.name!r}", name, warm.instance_type, warm.desired_count, warm.capacity_type)
        )
    for where, name, instance_type, desired, capacity_type in targets:
        if name is None:
            continue
        pool = by_name.get(name)
        if pool is None:
            raise ValueError(f"{where}: no host pool named {name!r} (configured: {configured})")
        if not pool.fits(instance_type):
            raise ValueError(
                f"{where}: instance type {instance_type} does not run on host pool {name!r} "
                f"({pool.instance_type or pool.instance_family})"
            )
        if desired:
            raise ValueError(
                f"{where}: desired_count {desired} on host pool {name!r}: warm pools on Dedicated Hosts "
                "cannot pre-launch instances (set desired_count 0)"
            )
        if capacity_type != ON_DEMAND:
            raise ValueError(f"{where}: capacity_type {capacity_type} on host pool {name!r}: {ON_HOSTS_ONLY}")


def macs_without_hosts(ec2: Ec2Defaults, warm_pools: list[WarmPool]) -> list[str]:
    """Warnings for Mac launch targets with no host pool: AWS runs Mac instances only on Dedicated
    Hosts, so their pods fail ``HostPoolRequired`` and their warm-pool members cannot launch."""
    targets = [("ec2", ec2.instance_type, ec2.host_pool)]
    targets += [(f"warm pool {w.name!r}", w.instance_type, w.host_pool or ec2.host_pool) for w in warm_pools]
    return [
        f"{where}: instance type {kind} runs only on a Dedicated Host but names no host_pool: its pods "
        "fail with HostPoolRequired and its warm-pool members cannot launch on AWS (docs/configuration.md, "
        "host_pools)"
        for where, kind, host_pool in targets
        if is_mac(kind) and host_pool is None
    ]


def host_quota_codes(pools: list[HostPool], configured: dict[str, str]) -> dict[str, str]:
    """Instance family -> the host quota code the quota refresh reads: ``quotas.host_codes``, plus
    the known Mac code of every host pool's family it does not name."""
    codes = dict(configured)
    for pool in pools:
        if pool.family in MAC_HOST_QUOTA_CODES:
            codes.setdefault(pool.family, MAC_HOST_QUOTA_CODES[pool.family])
    return codes
