"""The rule that keeps pods to the launch parameters the operator allows (``allowlists``).

:func:`refuse_unlisted` is called by :func:`vkec2.domain.podspec.launch_params` with the pod's
checked annotations: every subnet, security group, key pair, AMI, instance type, instance
profile and capacity type a pod asks for, and every EBS volume type of its ``volumes``, must be
one the configuration launches with anyway (``ec2``, every warm pool and the image table's AMIs,
see :func:`configured`)
or one its namespace's allowlist names
(:class:`vkec2.config.allowlist.Allowlists`). Anything else raises
:class:`~vkec2.errors.InvalidPodSpec` with reason ``AnnotationNotAllowed`` naming the annotation,
the value, the namespace and the settings key that would allow it, so the pod fails the way every
invalid annotation does (row C1 of the transition table) and nothing is launched.
"""

from __future__ import annotations

from collections.abc import Mapping

from vkec2.config import Ec2Defaults, Settings
from vkec2.config.allowlist import ANY, Kind
from vkec2.contract import ANNOTATION_PREFIX
from vkec2.domain.launchopts import volume_types
from vkec2.errors import InvalidPodSpec

REASON_NOT_ALLOWED = "AnnotationNotAllowed"

#: The namespace of a pod whose metadata names none (as the API server defaults it).
DEFAULT_NAMESPACE = "default"

#: Annotation (without the prefix) -> the kind of allowlist that governs its values.
GOVERNED: dict[str, Kind] = {
    "subnet-id": "subnets",
    "security-groups": "security_groups",
    "key-pair": "key_pairs",
    "image-id": "images",
    "instance-type": "instance_types",
    "instance-types": "instance_types",
    "instance-profile": "instance_profiles",
    "volumes": "volume_types",
    "capacity-type": "capacity_types",
}


def _values(target: Ec2Defaults) -> dict[Kind, set[str]]:
    return {
        "subnets": set(target.subnets),
        "security_groups": set(target.security_groups),
        "key_pairs": {target.key_pair} if target.key_pair else set(),
        "images": {target.image_id} if target.image_id else set(),
        "instance_types": {target.instance_type, *target.instance_types, *target.instance_type_choices},
        "instance_profiles": {target.instance_profile} if target.instance_profile else set(),
        "volume_types": {v.type for v in target.volumes or ()}
        | ({target.root_volume.type} if target.root_volume.type else set()),
        "capacity_types": {target.capacity_type},
    }


def configured(settings: Settings) -> dict[Kind, set[str]]:
    """Every value of each kind the configuration itself launches with (``ec2`` and the pools)."""
    found = _values(settings.ec2)
    for pool in settings.warm_pools:
        for kind, values in _values(settings.pool_launch_defaults(pool)).items():
            found[kind] |= values
    found["images"] |= {row.ami for row in settings.kubernetes.images}  # the image table's AMIs
    found["instance_types"] |= {h.instance_type for h in settings.host_pools if h.instance_type}
    found["subnets"] |= {subnet for h in settings.host_pools for subnet in h.subnets}
    return found


def _split(name: str, value: str) -> list[str]:
    if name in ("security-groups", "instance-types"):
        return [item.strip() for item in value.split(",")]
    if name == "volumes":
        return volume_types(value)
    return [value]


def refuse_unlisted(settings: Settings, namespace: str, ann: Mapping[str, str]) -> None:
    """Raise InvalidPodSpec (AnnotationNotAllowed) for the first annotated value not allowed."""
    if not any(name in GOVERNED for name in ann):
        return
    known = configured(settings)
    lists = settings.allowlists
    for name, kind in GOVERNED.items():
        if name not in ann:
            continue
        allowed = lists.allowed(namespace, kind)
        if ANY in allowed:
            continue
        for value in _split(name, ann[name]):
            if value in known[kind] or value in allowed:
                continue
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise InvalidPodSpec(
                f"annotation {ANNOTATION_PREFIX}{name}: {shown!r} is not allowed in namespace "
                f"{namespace!r}: neither configured nor listed in {lists.source(namespace, kind)}",
                reason=REASON_NOT_ALLOWED,
            )
