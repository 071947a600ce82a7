"""The EC2 launch sections of the settings: the defaults (``ec2``) and the warm pools.

:class:`Ec2Defaults` holds the parameters a pod launches with when its annotations do not say
otherwise, plus EC2's visibility lag and the capacity wait; :class:`WarmPool` is a named pool of
pre-launched instances whose unset parameters inherit from ``ec2``
(:meth:`WarmPool.launch_defaults`). Both share :class:`_LaunchTarget`, the parameters that choose
an instance. The value rules (IDs, instance types, tags) are :mod:`vkec2.config.shapes`; turning
the parameters into a launch is :mod:`vkec2.domain.podspec`.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from vkec2.config.shapes import (
    DNS_LABEL_RE,
    SECURITY_GROUP_ID_RE,
    SUBNET_ID_RE,
    Section,
    check_ids,
    check_image,
    check_instance_type,
    check_key_pair,
    check_profile,
    tags_problem,
)


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

    _profile = field_validator("instance_profile")(check_profile)
    _key = field_validator("key_pair")(check_key_pair)

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        return check_ids(value, SUBNET_ID_RE, "subnet ID like subnet-0123abcd")

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        return check_ids(value, SECURITY_GROUP_ID_RE, "security group ID like sg-0123abcd")


class Ec2Defaults(_LaunchTarget):
    """Launch parameters used when a pod's annotations do not override them, and EC2's visibility lag."""

    user_data: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problem = tags_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class WarmPool(_LaunchTarget):
    """A named pool of pre-launched instances that pods can claim.

    Unset fields (``image_id``, empty ``subnets``/``security_groups``, ``instance_profile``,
    ``key_pair``) inherit from ``ec2``; see :meth:`Settings.pool_launch_defaults`.
    """

    name: str
    desired_count: int = Field(default=0, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DNS_LABEL_RE.fullmatch(value):
            raise ValueError(
                f"pool name {value!r} is not a DNS label (lowercase letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit)"
            )
        return value

    def launch_defaults(self, ec2: Ec2Defaults) -> Ec2Defaults:
        """The EC2 parameters this pool's instances launch with: the pool's, unset ones from ``ec2``."""
        return Ec2Defaults(
            image_id=self.image_id or ec2.image_id,
            instance_type=self.instance_type,
            instance_types=list(self.instance_types),
            subnets=list(self.subnets or ec2.subnets),
            security_groups=list(self.security_groups or ec2.security_groups),
            instance_profile=self.instance_profile or ec2.instance_profile,
            key_pair=self.key_pair or ec2.key_pair,
            user_data=ec2.user_data,
            tags=dict(ec2.tags),
            host_pool=self.host_pool or ec2.host_pool,
        )
