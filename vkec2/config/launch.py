"""The EC2 launch sections of the settings: the defaults (``ec2``) and the warm pools.

:class:`Ec2Defaults` holds the parameters a pod launches with when its annotations do not say
otherwise, plus EC2's visibility lag and the capacity wait; :class:`WarmPool` is a named pool of
pre-launched instances whose unset parameters inherit from ``ec2``
(:meth:`WarmPool.launch_defaults`). Both share :class:`_LaunchTarget`, the parameters that choose
an instance. The value rules (IDs, instance types, tags) are :mod:`vkec2.config.shapes`, the launch
hygiene sections (metadata, volumes, launch template) :mod:`vkec2.config.launchopts`; turning
the parameters into a launch is :mod:`vkec2.domain.podspec`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from vkec2.config.launchopts import (
    MAC_ROOT_MIN_GIB,
    EbsVolume,
    LaunchTemplateRef,
    MetadataOptions,
    RootVolume,
    check_families,
    check_volumes,
)
from vkec2.config.shapes import (
    SECURITY_GROUP_ID_RE,
    Section,
    check_ids,
    check_image,
    check_instance_type,
    check_key_pair,
    check_pool_name,
    check_profile,
    check_subnets,
    tags_problem,
)
from vkec2.contract import CAPACITY_TYPES, ON_DEMAND


class _LaunchTarget(Section):
    """The EC2 parameters that choose an instance, shared by the defaults and every warm pool."""

    image_id: str | None = None
    instance_type: str = "m5.large"
    instance_types: list[str] = Field(
        default_factory=list,
        description="Alternative instance types, tried in order after instance_type when EC2 lacks capacity.",
    )
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    instance_profile: str | None = None
    key_pair: str | None = None
    # Launch hygiene (vkec2.config.launchopts); None inherits (a pool) or is not sent (ec2).
    volumes: list[EbsVolume] | None = Field(default=None, description="Extra EBS volumes.")
    launch_template: LaunchTemplateRef | None = None
    detailed_monitoring: bool | None = Field(
        default=None, description="Monitoring.Enabled; unset: false, or the launch template's."
    )
    capacity_type: str = Field(
        default=ON_DEMAND,
        description="on-demand, spot, or spot-or-on-demand (Spot first, on-demand without Spot capacity).",
    )
    host_pool: str | None = Field(
        default=None, description="The host pool (host_pools) whose Dedicated Hosts the instances launch on."
    )

    _image = field_validator("image_id")(check_image)
    _type = field_validator("instance_type")(check_instance_type)

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        value = [check_instance_type(item) for item in value]
        if len(set(value)) != len(value):
            raise ValueError("an instance type is listed twice")
        return value

    _volumes = field_validator("volumes")(check_volumes)

    @field_validator("capacity_type")
    @classmethod
    def _capacity_type(cls, value: str) -> str:
        if value not in CAPACITY_TYPES:
            raise ValueError(f"{value!r} is not a capacity type (one of {', '.join(CAPACITY_TYPES)})")
        return value

    _profile = field_validator("instance_profile")(check_profile)
    _key = field_validator("key_pair")(check_key_pair)

    _subnets = field_validator("subnets")(check_subnets)

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        return check_ids(value, SECURITY_GROUP_ID_RE, "security group ID like sg-0123abcd")

    def type_from_template(self) -> bool:
        """Whether the instance type comes from the launch template: one is used and
        ``instance_type`` was not set explicitly (its default ``m5.large`` is then not sent)."""
        return self.launch_template is not None and "instance_type" not in self.model_fields_set


class Ec2Defaults(_LaunchTarget):
    """Launch parameters used when a pod's annotations do not override them, and EC2's visibility lag."""

    user_data: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    metadata: MetadataOptions = Field(default_factory=MetadataOptions)
    root_volume: RootVolume = Field(default_factory=RootVolume)
    root_volume_min_gib: dict[str, int] = Field(
        default_factory=lambda: dict(MAC_ROOT_MIN_GIB),
        description="Instance family -> smallest root volume (GiB) when root_volume.size_gib is unset.",
    )
    visibility_window_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long after its launch an instance EC2 answers NotFound for is pending, not gone.",
    )
    capacity_deadline_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="How long a pod waits for EC2 capacity (or quota) before it is Failed.",
    )
    unavailable_ttl_seconds: float = Field(
        default=180.0,
        gt=0,
        description="How long an (instance type, zone) that answered 'no capacity' is skipped fleet-wide.",
    )
    instance_type_choices: list[str] = Field(
        default_factory=list,
        description="Instance types a pod that names none is fitted to by its cpu/memory requests "
        "(the smallest that fits; the next larger ones are its fallbacks). Empty: instance_type.",
    )

    @field_validator("instance_type_choices")
    @classmethod
    def _choices(cls, value: list[str]) -> list[str]:
        return cls._types(value)

    spot_max_price: str | None = Field(
        default=None,
        description="The most a Spot instance may cost, US dollars per hour (unset: the on-demand price).",
    )

    @field_validator("spot_max_price", mode="before")
    @classmethod
    def _max_price(cls, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{value!r} is not a price in US dollars per hour like '0.05'")
        value = str(value)
        try:
            price = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a price in US dollars per hour like '0.05'") from None
        if not 0 < price < float("inf"):
            raise ValueError(f"{value!r} is not a positive price in US dollars per hour")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problem = tags_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    _families = field_validator("root_volume_min_gib")(check_families)


class WarmPool(_LaunchTarget):
    """A named pool of pre-launched instances that pods can claim.

    Unset fields (``image_id``, empty ``subnets``/``security_groups``, ``instance_profile``,
    ``key_pair``, ``root_volume``, ``volumes``, ``launch_template``, ``detailed_monitoring``) inherit
    from ``ec2``, and ``ec2.metadata`` always applies; see :meth:`Settings.pool_launch_defaults`.
    """

    name: str
    desired_count: int = Field(default=0, ge=0)
    root_volume: RootVolume | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_pool_name(value)

    def launch_defaults(self, ec2: Ec2Defaults) -> Ec2Defaults:
        """The EC2 parameters this pool's instances launch with: the pool's, unset ones from ``ec2``."""
        template = self.launch_template or ec2.launch_template
        own_type = template is None or "instance_type" in self.model_fields_set
        instance_type: dict[str, Any] = {"instance_type": self.instance_type} if own_type else {}
        return Ec2Defaults(
            image_id=self.image_id or ec2.image_id,
            **instance_type,
            instance_types=list(self.instance_types),
            subnets=list(self.subnets or ec2.subnets),
            security_groups=list(self.security_groups or ec2.security_groups),
            instance_profile=self.instance_profile or ec2.instance_profile,
            key_pair=self.key_pair or ec2.key_pair,
            user_data=ec2.user_data,
            tags=dict(ec2.tags),
            metadata=ec2.metadata,
            root_volume=self.root_volume if self.root_volume is not None else ec2.root_volume,
            root_volume_min_gib=dict(ec2.root_volume_min_gib),
            volumes=self.volumes if self.volumes is not None else ec2.volumes,
            launch_template=template,
            detailed_monitoring=(
                self.detailed_monitoring if self.detailed_monitoring is not None else ec2.detailed_monitoring
            ),
            capacity_type=self.capacity_type,
            spot_max_price=ec2.spot_max_price,
            host_pool=self.host_pool or ec2.host_pool,
        )


def check_root_devices(ec2: Ec2Defaults, pools: list[WarmPool]) -> None:
    """A root volume set where the launch template supplies the AMI needs ``device_name``: without
    an AMI ID, DescribeImages cannot say which device is the root (raises ValueError)."""
    targets = [("ec2", ec2), *((f"warm_pools.{p.name}", p.launch_defaults(ec2)) for p in pools)]
    for where, target in targets:
        root = target.root_volume
        from_template = target.image_id is None and target.launch_template is not None
        if from_template and root.device_name is None and root != RootVolume():
            raise ValueError(
                f"{where}: root_volume is set but the AMI comes from the launch template: set "
                "root_volume.device_name (/dev/xvda or /dev/sda1)"
            )
