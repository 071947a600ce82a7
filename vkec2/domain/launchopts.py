"""Launch hygiene as pure rules: what every RunInstances adds to the pod's parameters, and its volumes.

:class:`LaunchOptions` is the part of :class:`~vkec2.domain.podspec.LaunchParams` that does not
choose *which* instance a pod gets but *how* it is launched: the instance metadata options (IMDSv2
required unless the operator insecurely says otherwise, the PUT hop limit), the root volume, the
extra EBS volumes (configured, plus the pod annotation ``compute.amazonaws.com/volumes``, parsed
and checked strictly here by :func:`parse_volumes` with the rules of the configuration,
:class:`vkec2.config.launchopts.EbsVolume`), detailed monitoring and the launch template.
:func:`options_for` builds it from ``ec2`` or a warm pool's launch defaults; its default equals
what the default configuration gives, so a pod's fingerprint does not change when nothing is set.
:func:`block_device_mappings` turns it into the ``BlockDeviceMappings`` of a launch for one
instance type, given the AMI's root device (:class:`RootDevice`, which the gateway reads with
DescribeImages when the root volume needs it, :func:`needs_root_device`): a Mac instance's root
volume is at least its family's ``ec2.root_volume_min_gib`` and never smaller than the AMI's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from vkec2.config import Ec2Defaults
from vkec2.config.launchopts import MAC_ROOT_MIN_GIB, MAX_VOLUMES, EbsVolume, instance_family
from vkec2.contract import VOLUMES_ANNOTATION
from vkec2.errors import InvalidPodSpec

#: At most this many volumes in the ``volumes`` annotation.
MAX_ANNOTATION_VOLUMES = 4
REASON_INVALID_ANNOTATION = "InvalidAnnotation"


@dataclass(frozen=True)
class Volume:
    """One extra EBS volume of a launch."""

    device: str
    size_gib: int
    type: str = "gp3"
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    delete_on_termination: bool = True

    @classmethod
    def of(cls, volume: EbsVolume) -> Volume:
        return cls(**volume.model_dump())


@dataclass(frozen=True)
class Root:
    """The root volume's settings; None keeps the AMI's."""

    size_gib: int | None = None
    type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    device_name: str | None = None


@dataclass(frozen=True)
class Template:
    """A launch template by ID or name, and its version."""

    id: str | None
    name: str | None
    version: str = "$Default"


@dataclass(frozen=True)
class RootDevice:
    """What the AMI says about its root device: its name and its snapshot's size (GiB), if known."""

    name: str
    size_gib: int | None = None


@dataclass(frozen=True)
class LaunchOptions:
    """How an instance is launched beyond which one it is (see the module docstring)."""

    http_tokens: str = "required"
    hop_limit: int = 2
    root: Root = field(default_factory=Root)
    root_min_gib: tuple[tuple[str, int], ...] = tuple(sorted(MAC_ROOT_MIN_GIB.items()))
    volumes: tuple[Volume, ...] = ()
    monitoring: bool | None = None
    template: Template | None = None


def options_for(target: Ec2Defaults, extra: tuple[Volume, ...] = ()) -> LaunchOptions:
    """The launch options of ``ec2`` or a pool's launch defaults, plus a pod's ``extra`` volumes."""
    root = target.root_volume
    template = target.launch_template
    return LaunchOptions(
        http_tokens=target.metadata.http_tokens,
        hop_limit=target.metadata.hop_limit,
        root=Root(**root.model_dump()),
        root_min_gib=tuple(sorted(target.root_volume_min_gib.items())),
        volumes=(*(Volume.of(v) for v in target.volumes or ()), *extra),
        monitoring=target.detailed_monitoring,
        template=Template(template.id, template.name, template.version) if template is not None else None,
    )


def _invalid(problem: str) -> InvalidPodSpec:
    return InvalidPodSpec(f"annotation {VOLUMES_ANNOTATION}: {problem}", reason=REASON_INVALID_ANNOTATION)


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_volumes(text: str, configured: tuple[Volume, ...] = ()) -> tuple[Volume, ...]:
    """The extra volumes a pod asks for: a JSON list of objects with ``device``, ``size_gib``,
    ``type`` (default gp3), ``iops``, ``throughput``, ``encrypted`` and ``delete_on_termination``
    (only true: a pod's volume never outlives its instance). Each is checked against AWS's limits;
    a device may not repeat one of ``configured``. Raises InvalidPodSpec (InvalidAnnotation)."""
    try:
        items = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"not a JSON list of volumes: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _invalid('not a JSON list of objects like [{"device": "/dev/sdf", "size_gib": 100}]')
    if not items:
        raise _invalid("an empty list")
    if len(items) > MAX_ANNOTATION_VOLUMES:
        raise _invalid(f"{len(items)} volumes; at most {MAX_ANNOTATION_VOLUMES}")
    volumes: list[Volume] = []
    for n, item in enumerate(items):
        if "kms_key_id" in item:
            raise _invalid(f"volume {n}: kms_key_id is not accepted from a pod (configure it in ec2.volumes)")
        if item.get("delete_on_termination", True) is not True:
            raise _invalid(f"volume {n}: a pod's volume is always deleted with its instance")
        try:
            volumes.append(Volume.of(EbsVolume.model_validate(item, strict=True)))
        except ValidationError as exc:
            raise _invalid(f"volume {n}: {_problem(exc)}") from None
    devices = [v.device for v in (*configured, *volumes)]
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise _invalid(f"device {', '.join(twice)} is used twice (the configured volumes included)")
    if len(devices) > MAX_VOLUMES:
        raise _invalid(f"{len(devices)} volumes with the configured ones; at most {MAX_VOLUMES}")
    return tuple(volumes)


def volume_types(text: str) -> list[str]:
    """The volume types named by a ``volumes`` annotation (the allowlist's values); [] if unreadable."""
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if not isinstance(items, list):
        return []
    return [str(item.get("type", "gp3")) for item in items if isinstance(item, dict)]


def root_device_of(image: Mapping[str, Any]) -> RootDevice | None:
    """The root device of a DescribeImages ``Images`` entry (None when it names none)."""
    name = image.get("RootDeviceName")
    if not isinstance(name, str) or not name:
        return None
    size = next(
        (
            m.get("Ebs", {}).get("VolumeSize")
            for m in image.get("BlockDeviceMappings") or ()
            if isinstance(m, Mapping) and m.get("DeviceName") == name
        ),
        None,
    )
    return RootDevice(name, size if isinstance(size, int) else None)


def _root_floor(options: LaunchOptions, instance_type: str) -> int | None:
    return dict(options.root_min_gib).get(instance_family(instance_type))


def _root_set(options: LaunchOptions) -> bool:
    root = options.root
    return any(v is not None for v in (root.size_gib, root.type, root.iops, root.throughput, root.encrypted))


def needs_root_device(options: LaunchOptions, instance_type: str) -> bool:
    """Whether a root mapping is sent for this launch and its device name must come from the AMI."""
    if options.root.device_name is not None:
        return False
    return _root_set(options) or _root_floor(options, instance_type) is not None


def _ebs(volume: Root | Volume) -> dict[str, Any]:
    ebs: dict[str, Any] = {}
    for key, value in (
        ("VolumeSize", volume.size_gib),
        ("VolumeType", volume.type),
        ("Iops", volume.iops),
        ("Throughput", volume.throughput),
        ("Encrypted", volume.encrypted),
        ("KmsKeyId", volume.kms_key_id),
    ):
        if value is not None:
            ebs[key] = value
    return ebs


def block_device_mappings(
    options: LaunchOptions, instance_type: str, root_device: RootDevice | None
) -> list[dict[str, Any]]:
    """The BlockDeviceMappings of a launch: the root volume when anything about it is set (or the
    instance family has a smallest size), then the extra volumes. Without a known root device name
    (a launch template supplies the AMI and ``root_volume.device_name`` is unset) no root mapping is
    sent."""
    mappings: list[dict[str, Any]] = []
    root = options.root
    ebs = _ebs(root)
    floor = _root_floor(options, instance_type)
    if root.size_gib is None and floor is not None:
        ebs["VolumeSize"] = max(floor, root_device.size_gib or 0) if root_device else floor
    elif ebs and "VolumeSize" not in ebs and root_device is not None and root_device.size_gib:
        ebs["VolumeSize"] = root_device.size_gib  # the AMI's size, said explicitly
    device = root.device_name or (root_device.name if root_device is not None else None)
    if ebs and device:  # the root volume goes with the instance, whatever the AMI says
        mappings.append({"DeviceName": device, "Ebs": {**ebs, "DeleteOnTermination": True}})
    for volume in options.volumes:
        mappings.append(
            {
                "DeviceName": volume.device,
                "Ebs": {**_ebs(volume), "DeleteOnTermination": volume.delete_on_termination},
            }
        )
    return mappings


def metadata_options(options: LaunchOptions) -> dict[str, Any]:
    """The ``MetadataOptions`` of every launch: the endpoint on, tokens as configured (required)."""
    return {
        "HttpTokens": options.http_tokens,
        "HttpEndpoint": "enabled",
        "HttpPutResponseHopLimit": options.hop_limit,
    }


def template_spec(template: Template) -> dict[str, str]:
    """The ``LaunchTemplate`` parameter of a launch."""
    key = {"LaunchTemplateId": template.id} if template.id else {"LaunchTemplateName": str(template.name)}
    return {**key, "Version": template.version}
