"""Which launch parameters pods may ask for by annotation: the ``allowlists`` section.

A pod's ``compute.amazonaws.com/*`` annotations can pick a subnet, security groups, a key pair, an
AMI, instance types, an instance profile, the EBS volume types of extra volumes and a capacity
type. What the operator configured (``ec2`` and every warm pool) is always allowed; anything else
only when an allowlist names it. ``allowlists.default`` applies to every namespace;
``allowlists.namespaces.<ns>`` replaces the default's list of a kind for that namespace when it sets
it, and inherits the default's list for the kinds it leaves unset. Entries are exact values (IDs,
names, instance types; an instance profile exactly as the pod spells it, name or ARN); the lone
``"*"`` allows any value of its kind (the old, open behaviour, for an operator who names it). The
check itself is a pure rule in :mod:`vkec2.domain.allowlist`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, get_args

from pydantic import Field, field_validator

from vkec2.config.launchopts import SIZE_GIB
from vkec2.config.shapes import (
    DNS_LABEL_RE,
    IMAGE_ID_RE,
    SECURITY_GROUP_ID_RE,
    SUBNET_ID_RE,
    Section,
    check_instance_type,
    is_instance_profile,
    is_key_pair,
)
from vkec2.contract import CAPACITY_TYPES

#: The entry that allows any value of its kind.
ANY = "*"

#: The kinds of launch parameter an allowlist names (its field names).
Kind = Literal[
    "subnets",
    "security_groups",
    "key_pairs",
    "images",
    "instance_types",
    "instance_profiles",
    "volume_types",
    "capacity_types",
]
KINDS: tuple[Kind, ...] = get_args(Kind)


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: bool(pattern.fullmatch(value))


def _checked(values: list[str] | None, ok: Callable[[str], bool], what: str) -> list[str] | None:
    if values is None:
        return None
    for value in values:
        if value != ANY and not ok(value):
            raise ValueError(f"not {what} or '*': {value!r}")
    if len(set(values)) != len(values):
        raise ValueError("a value is listed twice")
    return values


class Allowlist(Section):
    """Launch parameters pods may ask for beyond the configured ones; None inherits the default."""

    subnets: list[str] | None = Field(default=None, description="Subnet IDs.")
    security_groups: list[str] | None = Field(default=None, description="Security group IDs.")
    key_pairs: list[str] | None = Field(default=None, description="Key pair names.")
    images: list[str] | None = Field(default=None, description="AMI IDs.")
    instance_types: list[str] | None = Field(default=None, description="Instance types.")
    instance_profiles: list[str] | None = Field(default=None, description="Instance profile names or ARNs.")
    volume_types: list[str] | None = Field(
        default=None, description="EBS volume types of the volumes annotation (gp3, io2 ...)."
    )
    capacity_types: list[str] | None = Field(
        default=None, description="Capacity types (on-demand, spot, spot-or-on-demand)."
    )

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str] | None) -> list[str] | None:
        return _checked(value, _matches(SUBNET_ID_RE), "a subnet ID like subnet-0123abcd")

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, value: list[str] | None) -> list[str] | None:
        return _checked(value, _matches(SECURITY_GROUP_ID_RE), "a security group ID like sg-0123abcd")

    @field_validator("key_pairs")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        return _checked(value, is_key_pair, "a key pair name")

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str] | None) -> list[str] | None:
        return _checked(value, _matches(IMAGE_ID_RE), "an AMI ID like ami-0123456789abcdef0")

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        def ok(item: str) -> bool:
            try:
                check_instance_type(item)
            except ValueError:
                return False
            return True

        return _checked(value, ok, "an instance type like m5.large")

    @field_validator("instance_profiles")
    @classmethod
    def _profiles(cls, value: list[str] | None) -> list[str] | None:
        return _checked(value, is_instance_profile, "an instance profile name or ARN")

    @field_validator("volume_types")
    @classmethod
    def _volume_types(cls, value: list[str] | None) -> list[str] | None:
        return _checked(value, lambda item: item in SIZE_GIB, f"an EBS volume type ({', '.join(SIZE_GIB)})")

    @field_validator("capacity_types")
    @classmethod
    def _capacity_types(cls, value: list[str] | None) -> list[str] | None:
        return _checked(
            value, lambda v: v in CAPACITY_TYPES, "a capacity type (on-demand, spot, spot-or-on-demand)"
        )


class Allowlists(Section):
    """The default allowlist and the namespaces' own (see the module docstring for the rules)."""

    default: Allowlist = Field(default_factory=Allowlist)
    namespaces: dict[str, Allowlist] = Field(default_factory=dict)

    @field_validator("namespaces")
    @classmethod
    def _names(cls, value: dict[str, Allowlist]) -> dict[str, Allowlist]:
        for name in value:
            if not DNS_LABEL_RE.fullmatch(name):
                raise ValueError(f"namespace {name!r} is not a DNS label")
        return value

    def allowed(self, namespace: str, kind: Kind) -> tuple[str, ...]:
        """The values of ``kind`` that pods of ``namespace`` may ask for beyond the configured ones."""
        own = self.namespaces.get(namespace)
        listed = getattr(own, kind) if own is not None else None
        if listed is None:
            listed = getattr(self.default, kind)
        return tuple(listed or ())

    def source(self, namespace: str, kind: Kind) -> str:
        """The settings key the list of ``kind`` for ``namespace`` comes from (for messages)."""
        own = self.namespaces.get(namespace)
        if own is not None and getattr(own, kind) is not None:
            return f"allowlists.namespaces.{namespace}.{kind}"
        return f"allowlists.default.{kind}"
