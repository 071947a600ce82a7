"""Launch hygiene settings: instance metadata (IMDSv2), EBS volumes, monitoring and launch templates.

These sections hang off ``ec2`` (and, except ``metadata``, off each warm pool, which inherits what
it leaves unset): :class:`MetadataOptions` (IMDSv2 required by default, the PUT response hop
limit), :class:`RootVolume` (the root EBS volume's size, type, performance and encryption),
:class:`EbsVolume` (an extra volume, also the shape of one entry of the pod annotation
``compute.amazonaws.com/volumes``, so a file and a pod are checked by the same rules) and
:class:`LaunchTemplateRef` (an EC2 launch template whose fields the explicit ones override). The
EBS limits per volume type are AWS's (EC2 API ``EbsBlockDevice``); :data:`MAC_ROOT_MIN_GIB` holds
the default smallest root volume per Mac family. Turning all of it into a RunInstances request
is :mod:`vkec2.domain.launchopts`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from vkec2.config.shapes import INSTANCE_FAMILY_RE, Section

_Families = TypeVar("_Families", bound=Mapping[str, float])

#: The EBS volume types EC2 accepts in a block device mapping.
VolumeType = Literal["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]
#: Size range (GiB) per volume type.
SIZE_GIB: dict[str, tuple[int, int]] = {
    "gp2": (1, 16384),
    "gp3": (1, 16384),
    "io1": (4, 16384),
    "io2": (4, 65536),
    "st1": (125, 16384),
    "sc1": (125, 16384),
    "standard": (1, 1024),
}
#: Provisioned IOPS range per volume type (only these types take ``iops``; io1 and io2 need it).
IOPS: dict[str, tuple[int, int]] = {"gp3": (3000, 16000), "io1": (100, 64000), "io2": (100, 256000)}
#: Throughput range (MiB/s); only gp3 takes ``throughput``.
THROUGHPUT_MIB: tuple[int, int] = (125, 1000)
#: A device name for an extra volume (the root device is the AMI's, /dev/xvda or /dev/sda1).
DEVICE_RE = re.compile(r"/dev/(sd[b-z]|xvd[b-z])")
#: A root device name as AMIs spell it.
ROOT_DEVICE_RE = re.compile(r"/dev/(sda1|xvda|sda|nvme0n1)")
#: At most this many extra volumes per instance (config and annotation together).
MAX_VOLUMES = 8
#: A KMS key ID, alias or ARN.
KMS_KEY_RE = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[0-9a-zA-Z-]{1,64}|alias/[A-Za-z0-9/_-]{1,250}))"
)
LAUNCH_TEMPLATE_ID_RE = re.compile(r"lt-[0-9a-f]{8,17}")
LAUNCH_TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9().\-/_]{3,128}")
LAUNCH_TEMPLATE_VERSION_RE = re.compile(r"\$Latest|\$Default|[1-9][0-9]{0,17}")

#: The smallest root volume (GiB) of a Mac instance by family when ``ec2.root_volume`` sets none:
#: macOS AMIs need about 100 GiB for Xcode work. A root volume is never made smaller than its AMI's.
MAC_ROOT_MIN_GIB: dict[str, int] = {
    "mac1": 100,
    "mac2": 100,
    "mac2-m1ultra": 100,
    "mac2-m2": 100,
    "mac2-m2pro": 100,
}

#: The boot timeout (seconds) of a Mac instance by family (``agent.boot_timeouts``): a Mac instance
#: takes 5-20 minutes and more from RunInstances to a running agent (the Mac mini behind it boots
#: through the Nitro card, macOS then runs ec2-macos-init and the user data), so an hour.
MAC_BOOT_TIMEOUT_SECONDS: dict[str, float] = {family: 3600.0 for family in MAC_ROOT_MIN_GIB}


def _check_performance(kind: str, size: int | None, iops: int | None, throughput: int | None) -> None:
    """Raise ValueError when size, IOPS or throughput is outside AWS's limits for volume type ``kind``."""
    low, high = SIZE_GIB[kind]
    if size is not None and not low <= size <= high:
        raise ValueError(f"size_gib {size} is outside {low}-{high} GiB for {kind}")
    if iops is not None:
        if kind not in IOPS:
            raise ValueError(f"iops is only for io1, io2 and gp3 volumes, not {kind}")
        low, high = IOPS[kind]
        if not low <= iops <= high:
            raise ValueError(f"iops {iops} is outside {low}-{high} for {kind}")
    elif kind in ("io1", "io2"):
        raise ValueError(f"an {kind} volume needs iops")
    if throughput is not None:
        if kind != "gp3":
            raise ValueError(f"throughput is only for gp3 volumes, not {kind}")
        low, high = THROUGHPUT_MIB
        if not low <= throughput <= high:
            raise ValueError(f"throughput {throughput} is outside {low}-{high} MiB/s for gp3")


def _check_kms(value: str | None) -> str | None:
    if value is not None and not KMS_KEY_RE.fullmatch(value):
        raise ValueError(f"not a KMS key ID, alias or ARN: {value!r}")
    return value


class MetadataOptions(Section):
    """The instance metadata service (``MetadataOptions`` of every RunInstances, endpoint enabled)."""

    http_tokens: Literal["required", "optional"] = Field(
        default="required",
        description="IMDSv2 session tokens: required (IMDSv2 only) or optional (IMDSv1 too, needs "
        "insecure_allow_imdsv1).",
    )
    hop_limit: int = Field(
        default=2,
        ge=1,
        le=64,
        description="PUT response hop limit: 2 lets a container on the instance reach IMDSv2.",
    )
    insecure_allow_imdsv1: bool = Field(
        default=False, description="Allow http_tokens: optional (IMDSv1, open to SSRF credential theft)."
    )

    @model_validator(mode="after")
    def _secure(self) -> MetadataOptions:
        if self.http_tokens == "optional" and not self.insecure_allow_imdsv1:
            raise ValueError(
                "http_tokens 'optional' turns IMDSv1 on (any SSRF on the instance can read its role's "
                "credentials); set insecure_allow_imdsv1: true to mean it"
            )
        return self


class RootVolume(Section):
    """The root EBS volume; unset fields keep the AMI's (its snapshot size, its volume type)."""

    size_gib: int | None = Field(default=None, ge=1)
    type: VolumeType | None = None
    iops: int | None = Field(default=None, ge=1)
    throughput: int | None = Field(default=None, ge=1)
    encrypted: bool | None = None
    kms_key_id: str | None = None
    device_name: str | None = Field(
        default=None, description="The AMI's root device; unset: read with DescribeImages."
    )

    _kms = field_validator("kms_key_id")(_check_kms)

    @field_validator("device_name")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not ROOT_DEVICE_RE.fullmatch(value):
            raise ValueError(f"not a root device name like /dev/xvda or /dev/sda1: {value!r}")
        return value

    @model_validator(mode="after")
    def _limits(self) -> RootVolume:
        if self.type is not None:
            _check_performance(self.type, self.size_gib, self.iops, self.throughput)
        elif self.iops is not None or self.throughput is not None:
            raise ValueError("iops and throughput need a type (gp3, io1 or io2)")
        if self.kms_key_id is not None and self.encrypted is not True:
            raise ValueError("kms_key_id needs encrypted: true")
        return self


class EbsVolume(Section):
    """An extra EBS volume (one entry of ``volumes``, or of the ``volumes`` annotation)."""

    device: str
    size_gib: int = Field(ge=1)
    type: VolumeType = "gp3"
    iops: int | None = Field(default=None, ge=1)
    throughput: int | None = Field(default=None, ge=1)
    encrypted: bool | None = None
    kms_key_id: str | None = None
    delete_on_termination: bool = True

    _kms = field_validator("kms_key_id")(_check_kms)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_RE.fullmatch(value):
            raise ValueError(f"not a device name /dev/sd[b-z] or /dev/xvd[b-z]: {value!r}")
        return value

    @model_validator(mode="after")
    def _limits(self) -> EbsVolume:
        _check_performance(self.type, self.size_gib, self.iops, self.throughput)
        if self.kms_key_id is not None and self.encrypted is not True:
            raise ValueError("kms_key_id needs encrypted: true")
        return self


def check_volumes(value: list[EbsVolume] | None) -> list[EbsVolume] | None:
    """At most :data:`MAX_VOLUMES` volumes, each on its own device (a pydantic field validator)."""
    if value is None:
        return None
    if len(value) > MAX_VOLUMES:
        raise ValueError(f"{len(value)} volumes; at most {MAX_VOLUMES}")
    devices = [volume.device for volume in value]
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise ValueError(f"device {', '.join(twice)} is used twice")
    return value


class LaunchTemplateRef(Section):
    """An EC2 launch template (by ID or name) and its version; explicit settings override its fields."""

    id: str | None = None
    name: str | None = None
    version: str = "$Default"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not LAUNCH_TEMPLATE_ID_RE.fullmatch(value):
            raise ValueError(f"not a launch template ID like lt-0123456789abcdef0: {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not LAUNCH_TEMPLATE_NAME_RE.fullmatch(value):
            raise ValueError(f"not a launch template name (3-128 of A-Z a-z 0-9 ( ) . - / _): {value!r}")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not LAUNCH_TEMPLATE_VERSION_RE.fullmatch(value):
            raise ValueError(f"not $Latest, $Default or a version number: {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> LaunchTemplateRef:
        if (self.id is None) == (self.name is None):
            raise ValueError("set exactly one of id and name")
        return self


def check_families(value: _Families) -> _Families:
    """Keys are instance families (``mac2``, ``mac2-m2pro``), values positive."""
    for family, number in value.items():
        if not INSTANCE_FAMILY_RE.fullmatch(family) or "." in family:
            raise ValueError(f"not an instance family like mac2 or mac2-m2pro: {family!r}")
        if number <= 0:
            raise ValueError(f"{family}: must be > 0, not {number}")
    return value


def instance_family(instance_type: str) -> str:
    """The family of an instance type: the part before the dot (``mac2-m2pro.metal`` -> ``mac2-m2pro``)."""
    return instance_type.split(".", 1)[0]
