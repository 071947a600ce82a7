"""Per-pod EC2 launch parameters: configuration defaults overridden by the pod's annotations.

Workers call :func:`launch_params` with the settings and the pod (a Kubernetes Pod as a JSON dict)
before claiming a warm-pool instance or sending RunInstances. The original provider's annotations
``compute.amazonaws.com/{image-id, instance-type, subnet-id, security-groups, instance-profile,
key-pair, tags, warm-pool}`` are honoured, plus ``instance-types`` (the instance types to try, in
order, when EC2 has no capacity), ``volumes`` (extra EBS volumes, :mod:`vkec2.domain.launchopts`,
which also builds the launch options every launch carries: IMDSv2, volumes, launch template),
``capacity-type`` (on-demand or Spot, :mod:`vkec2.domain.spot`) and ``host-pool`` (the Dedicated
Hosts to launch on, see :mod:`vkec2.domain.hosts`; a Mac type needs one); a named warm pool's
parameters are the base, and with no pool and no launch-parameter annotation the default pool is
used. The result is a frozen :class:`LaunchParams` whose :meth:`~LaunchParams.fingerprint` is
stable across retries (the subnet is picked from the pod UID, lists are sorted), so the same pod
always sends the same parameters with its ClientToken; it also carries the fallbacks a capacity
error moves on to (the other subnets, from the picked one on, and the alternative instance
types). Anything wrong with the pod raises :class:`~vkec2.errors.InvalidPodSpec` with reason
``InvalidAnnotation``, ``UnknownWarmPool``, ``MissingImage``, ``UnknownHostPool``,
``HostPoolCannotFit``, ``HostPoolRequired``, ``UnsupportedVolume`` (a hostPath, PVC or other volume
type vkec2 cannot provide) or ``AnnotationNotAllowed`` (a value neither
configured nor in the namespace's allowlist, :mod:`vkec2.domain.allowlist`); nothing is launched.
A DaemonSet's pod is refused with ``DaemonSetPodRefused`` (:mod:`vkec2.domain.citizen`). Without
the image-id annotation the containers' images choose the AMI through the image table
(:mod:`vkec2.domain.images`): a mapped AMI other than the default warm pool's launches cold, and
images without a row are carried in ``image_note`` for the create step to report.
The instance's UserData is decided here too (:func:`user_data_for`, also used for warm-pool
launches): ``ec2.user_data`` as configured, else the agent installer rendered from
``agent/userdata``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.userdata import render_user_data, trust_user_data
from vkec2.config import (
    IMAGE_ID_RE,
    INSTANCE_TYPE_RE,
    SECURITY_GROUP_ID_RE,
    SUBNET_ID_RE,
    Ec2Defaults,
    Settings,
    WarmPool,
    is_instance_profile,
    is_key_pair,
    tags_problem,
)
from vkec2.contract import (
    ANNOTATION_PREFIX,
    ON_DEMAND,
    SUPPORTED_VOLUME_TYPES,
    UNSUPPORTED_VOLUME,
    VOLUMES_ANNOTATION,
)
from vkec2.domain.agents import AgentTrust
from vkec2.domain.allowlist import DEFAULT_NAMESPACE, refuse_unlisted
from vkec2.domain.citizen import refuse_daemonset_pod
from vkec2.domain.hosts import host_pool_for, refuse_spot_on_hosts
from vkec2.domain.images import ImageChoice, image_ami
from vkec2.domain.launchopts import LaunchOptions, Volume, options_for, parse_volumes
from vkec2.domain.spot import capacity_type_problem, choose_capacity_type
from vkec2.errors import InvalidPodSpec

logger = logging.getLogger("vkec2.domain.podspec")


IMAGE_ID = "image-id"
INSTANCE_TYPE = "instance-type"
SUBNET_ID = "subnet-id"
SECURITY_GROUPS = "security-groups"
INSTANCE_PROFILE = "instance-profile"
KEY_PAIR = "key-pair"
TAGS = "tags"
WARM_POOL = "warm-pool"
INSTANCE_TYPES = "instance-types"
VOLUMES = VOLUMES_ANNOTATION.removeprefix(ANNOTATION_PREFIX)
CAPACITY_TYPE = "capacity-type"
HOST_POOL = "host-pool"
#: At most this many entries in the ``instance-types`` annotation.
MAX_INSTANCE_TYPES = 10

#: Annotations (without the prefix) this module understands.
#: Annotations that change how the instance is launched; any of them turns off the default pool.
LAUNCH_OVERRIDES = (
    IMAGE_ID,
    INSTANCE_TYPE,
    INSTANCE_TYPES,
    SUBNET_ID,
    SECURITY_GROUPS,
    INSTANCE_PROFILE,
    KEY_PAIR,
    VOLUMES,
    CAPACITY_TYPE,
    HOST_POOL,
)
#: Annotations (without the prefix) this module understands.
ANNOTATIONS = (*LAUNCH_OVERRIDES, TAGS, WARM_POOL)

REASON_INVALID_ANNOTATION = "InvalidAnnotation"
REASON_UNKNOWN_WARM_POOL = "UnknownWarmPool"
REASON_MISSING_IMAGE = "MissingImage"


@dataclass(frozen=True)
class LaunchParams:
    """Everything that decides which EC2 instance a pod gets."""

    image_id: str
    instance_type: str
    subnet_id: str | None
    security_groups: tuple[str, ...]
    instance_profile: str | None
    key_pair: str | None
    user_data: str | None
    tags: tuple[tuple[str, str], ...]  # user tags (config ec2.tags overlaid by the tags annotation), sorted
    warm_pool: str | None  # pool this pod may claim from, or None for a cold launch
    fallback_types: tuple[str, ...] = ()  # tried in order after instance_type when EC2 has no capacity
    fallback_subnets: tuple[str, ...] = ()  # tried in order after subnet_id (the rest of the list)
    # How it is launched: metadata options, volumes, monitoring, launch template (domain.launchopts).
    launch: LaunchOptions = field(default_factory=LaunchOptions)
    # on-demand, spot or spot-or-on-demand (vkec2.domain.spot); a candidate's is its one market
    capacity_type: str = ON_DEMAND
    spot_max_price: str | None = None  # a Spot launch's MaxPrice (None: the on-demand price)
    host_pool: str = ""  # the host pool (host_pools) whose Dedicated Hosts the pod launches on
    host_id: str = ""  # Placement.HostId: the host chosen for this launch (vkec2.fleet.hosts)
    tenancy: str = ""  # Placement.Tenancy ("host" on a Dedicated Host)
    host_resource_group_arn: str = ""  # Placement.HostResourceGroupArn, when the pool names one
    image_note: str = ""  # images the image table does not map (reported; not a launch parameter)

    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of all parameters (the same pod spec always gives the same).

        Optional fields at their defaults (empty fallbacks, default launch options, on-demand, no
        Spot price, no host placement) are left out, so a pod without them hashes as it did before
        they existed.
        """
        optional: dict[str, Any] = {
            "fallback_types": (),
            "fallback_subnets": (),
            "launch": _DEFAULT_LAUNCH,
            "capacity_type": ON_DEMAND,
            "spot_max_price": None,
            "host_pool": "",
            "host_id": "",
            "tenancy": "",
            "host_resource_group_arn": "",
        }
        fields = {
            k: v
            for k, v in asdict(self).items()
            if k != "image_note" and (k not in optional or v != optional[k])
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_DEFAULT_LAUNCH = asdict(LaunchOptions())


def _invalid(name: str, problem: str) -> InvalidPodSpec:
    message = f"annotation {ANNOTATION_PREFIX}{name}: {problem}"
    return InvalidPodSpec(message, reason=REASON_INVALID_ANNOTATION)


def _short(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _namespace(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    return namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE


def _metadata(pod: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    if not isinstance(meta, Mapping):
        meta = {}
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, Mapping):
        raise InvalidPodSpec("metadata.annotations is not a mapping", reason=REASON_INVALID_ANNOTATION)
    uid = meta.get("uid")
    return annotations, uid if isinstance(uid, str) else ""


def _read_annotations(annotations: Mapping[str, Any]) -> dict[str, str]:
    """Our annotations by short name, whitespace-trimmed; unknown ones under the prefix are logged."""
    found: dict[str, str] = {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not key.startswith(ANNOTATION_PREFIX):
            continue
        name = key[len(ANNOTATION_PREFIX) :]
        if name not in ANNOTATIONS:
            logger.warning("ignoring unknown annotation %s (known: %s)", key, ", ".join(ANNOTATIONS))
            continue
        if not isinstance(value, str):
            raise _invalid(name, f"not a string ({type(value).__name__})")
        value = value.strip()
        if not value:
            raise _invalid(name, "empty value")
        found[name] = value
    return found


def _parse_tags(text: str) -> dict[str, str]:
    try:
        tags = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _invalid(TAGS, f"not a JSON object of strings: {exc}") from None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise _invalid(TAGS, f"not a JSON object of strings: {_short(text)}")
    return tags


def _parse_groups(text: str) -> tuple[str, ...]:
    groups = [item.strip() for item in text.split(",")]
    for group in groups:
        if not SECURITY_GROUP_ID_RE.fullmatch(group):
            raise _invalid(SECURITY_GROUPS, f"{_short(group)} is not a security group ID like sg-0123abcd")
    return tuple(sorted(set(groups)))


def _parse_types(text: str) -> tuple[str, ...]:
    types = [item.strip() for item in text.split(",")]
    for item in types:
        if not INSTANCE_TYPE_RE.fullmatch(item):
            raise _invalid(INSTANCE_TYPES, f"{_short(item)} is not an instance type like m5.large")
    if len(set(types)) != len(types):
        raise _invalid(INSTANCE_TYPES, f"an instance type is listed twice in {_short(text)}")
    if len(types) > MAX_INSTANCE_TYPES:
        raise _invalid(INSTANCE_TYPES, f"{len(types)} instance types; at most {MAX_INSTANCE_TYPES}")
    return tuple(types)


def _instance_types(ann: Mapping[str, str], base: Ec2Defaults) -> tuple[str, tuple[str, ...]]:
    """The instance type to launch and its fallbacks, from the annotations or else from ``base``.

    ``instance-types`` lists them in order; ``instance-type`` alone names one with no fallback;
    with both, ``instance-type`` is tried first, then the list.
    """
    if INSTANCE_TYPES in ann:
        listed = _parse_types(ann[INSTANCE_TYPES])
        first = ann.get(INSTANCE_TYPE, listed[0])
    elif INSTANCE_TYPE in ann:
        return ann[INSTANCE_TYPE], ()
    else:  # "": the launch template's type (ec2.instance_type was not set explicitly)
        first = "" if base.type_from_template() else base.instance_type
        listed = tuple(base.instance_types)
    return first, tuple(t for t in listed if t != first)


def _subnets(ann: Mapping[str, str], base: Ec2Defaults, uid: str) -> tuple[str | None, tuple[str, ...]]:
    """The subnet to launch in (the annotation's, else picked from the UID) and the others after it."""
    if SUBNET_ID in ann:
        return ann[SUBNET_ID], ()
    first = _pick(base.subnets, uid)
    if first is None:
        return None, ()
    at = base.subnets.index(first)
    return first, tuple(s for s in dict.fromkeys([*base.subnets[at + 1 :], *base.subnets[:at]]) if s != first)


def _validated(ann: Mapping[str, str]) -> None:
    checks = (
        (IMAGE_ID, lambda v: bool(IMAGE_ID_RE.fullmatch(v)), "not an AMI ID like ami-0123456789abcdef0"),
        (INSTANCE_TYPE, lambda v: bool(INSTANCE_TYPE_RE.fullmatch(v)), "not an instance type like m5.large"),
        (SUBNET_ID, lambda v: bool(SUBNET_ID_RE.fullmatch(v)), "not a subnet ID like subnet-0123abcd"),
        (INSTANCE_PROFILE, is_instance_profile, "not an instance profile name or ARN"),
        (KEY_PAIR, is_key_pair, "not a key pair name (1-255 printable ASCII characters)"),
        (
            CAPACITY_TYPE,
            lambda v: capacity_type_problem(v) is None,
            "not on-demand, spot or spot-or-on-demand",
        ),
    )
    for name, ok, problem in checks:
        value = ann.get(name)
        if value is not None and not ok(value):
            raise _invalid(name, f"{_short(value)} is {problem}")


def _pick(subnets: list[str] | tuple[str, ...], uid: str) -> str | None:
    """One subnet, the same for every retry of the pod (chosen from a hash of its UID)."""
    if not subnets:
        return None
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).digest()
    return subnets[int.from_bytes(digest[:8], "big") % len(subnets)]


def _select_pool(
    settings: Settings, ann: Mapping[str, str], default: bool, mapped: str | None = None
) -> tuple[WarmPool | None, bool]:
    """The pool whose parameters are the base, and whether the pod named it explicitly; a pod
    whose image maps to an AMI (``mapped``) other than the default pool's launches cold."""
    name = ann.get(WARM_POOL)
    if name is not None:
        pool = settings.pool(name)
        if pool is None:
            configured = ", ".join(p.name for p in settings.warm_pools) or "none"
            raise InvalidPodSpec(
                f"annotation {ANNOTATION_PREFIX}{WARM_POOL}: no warm pool named {_short(name)} "
                f"(configured: {configured})",
                reason=REASON_UNKNOWN_WARM_POOL,
            )
        return pool, True
    if not default or any(key in ann for key in LAUNCH_OVERRIDES):
        return None, False
    pool = settings.default_pool()
    if pool is not None and mapped is not None and settings.pool_launch_defaults(pool).image_id != mapped:
        return None, False
    return pool, False


def _check_against_pool(pool: WarmPool, base: Ec2Defaults, ann: Mapping[str, str]) -> None:
    """With an explicit pool, annotations may restate its parameters but not contradict them."""

    def contradicts(name: str, what: str, theirs: object) -> InvalidPodSpec:
        return _invalid(name, f"{_short(ann[name])} contradicts warm pool {pool.name!r} ({what} {theirs})")

    if IMAGE_ID in ann and ann[IMAGE_ID] != base.image_id:
        raise contradicts(IMAGE_ID, "image", base.image_id)
    if INSTANCE_TYPE in ann and ann[INSTANCE_TYPE] != base.instance_type:
        raise contradicts(INSTANCE_TYPE, "instance type", base.instance_type)
    pool_types = (base.instance_type, *(t for t in base.instance_types if t != base.instance_type))
    if INSTANCE_TYPES in ann and _parse_types(ann[INSTANCE_TYPES]) != pool_types:
        raise contradicts(INSTANCE_TYPES, "instance types", ", ".join(pool_types))
    if SUBNET_ID in ann and base.subnets and ann[SUBNET_ID] not in base.subnets:
        raise contradicts(SUBNET_ID, "subnets", ", ".join(base.subnets))
    if SECURITY_GROUPS in ann and _parse_groups(ann[SECURITY_GROUPS]) != tuple(sorted(base.security_groups)):
        raise contradicts(SECURITY_GROUPS, "security groups", ", ".join(base.security_groups) or "none")
    if INSTANCE_PROFILE in ann and ann[INSTANCE_PROFILE] != base.instance_profile:
        raise contradicts(INSTANCE_PROFILE, "instance profile", base.instance_profile)
    if KEY_PAIR in ann and ann[KEY_PAIR] != base.key_pair:
        raise contradicts(KEY_PAIR, "key pair", base.key_pair)
    if VOLUMES in ann:
        raise _invalid(VOLUMES, f"warm pool {pool.name!r} launches its instances without a pod's volumes")
    if CAPACITY_TYPE in ann and ann[CAPACITY_TYPE] != base.capacity_type:
        raise contradicts(CAPACITY_TYPE, "capacity type", base.capacity_type)
    if HOST_POOL in ann and base.host_pool and ann[HOST_POOL] != base.host_pool:
        raise contradicts(HOST_POOL, "host pool", base.host_pool)


def user_data_for(settings: Settings, instance_type: str, trust: AgentTrust | None = None) -> str | None:
    """The UserData an instance launches with: ``ec2.user_data`` if set, else the agent installer.

    With ``agent.artifact`` set, the installer fetches the pinned artifact of the instance's
    platform and checks its sha256 (nothing from the internet); else, with ``bootstrap.s3_bucket``
    and ``s3_key`` set, the installer from ``agent/userdata`` is
    rendered for the instance's OS (``mac*`` instance types are macOS, others ``node.os``): it
    fetches the agent artifact from S3 with the instance role and runs it as a service on
    ``agent.port`` (plaintext, ``--insecure``, only when the fleet has no ``agent.tls``). A TLS
    fleet passes the launch's ``trust`` (fleet CA + bootstrap secret, from its ClientToken), which
    the script writes for the agent; without an installer the user data is that part alone.
    """
    if settings.ec2.user_data is not None:
        return settings.ec2.user_data
    os_name = "darwin" if instance_type.startswith("mac") else settings.node.os
    bootstrap, artifact = settings.bootstrap, settings.agent.artifact
    artifacts = None
    if artifact is not None:  # the pinned artifact (vkec2.config.artifact): every configured platform
        artifacts = {p: ("s3://{}/{}".format(*artifact.location(p)), d) for p, d in artifact.sha256.items()}
    elif not (bootstrap.s3_bucket and bootstrap.s3_key):
        if trust is None:
            return None
        return trust_user_data(os_name, fleet_ca_pem=trust.ca_cert_pem, bootstrap_secret=trust.secret)
    return render_user_data(
        os_name,
        s3_bucket=bootstrap.s3_bucket or "",
        s3_key=bootstrap.s3_key or "",
        artifacts=artifacts,
        port=settings.agent.port,
        region=settings.region,
        extra_args=["--insecure"] if settings.agent.tls is None else [],
        fleet_ca_pem=trust.ca_cert_pem if trust is not None else "",
        bootstrap_secret=trust.secret if trust is not None else "",
    )


def refuse_unsupported_volumes(pod: Mapping[str, Any]) -> None:
    """Raise ``UnsupportedVolume`` naming the first volume whose type vkec2 cannot provide (hostPath,
    persistentVolumeClaim, ...): such a pod fails rather than run without the volume."""
    spec = pod.get("spec") if isinstance(pod, Mapping) else None
    volumes = spec.get("volumes") if isinstance(spec, Mapping) else None
    for vol in volumes if isinstance(volumes, list) else []:
        if not isinstance(vol, Mapping):
            continue
        kinds = [k for k in vol if k != "name"]
        if len(kinds) != 1 or kinds[0] not in SUPPORTED_VOLUME_TYPES:
            raise InvalidPodSpec(
                f"volume {vol.get('name')!r} has type {', '.join(kinds) or 'none'}, which vkec2 does not "
                f"support (supported: {', '.join(SUPPORTED_VOLUME_TYPES)})",
                reason=UNSUPPORTED_VOLUME,
            )


def launch_params(settings: Settings, pod: Mapping[str, Any], *, default_pool: bool = True) -> LaunchParams:
    """The EC2 parameters for ``pod``; raises :class:`InvalidPodSpec` when it cannot be launched.

    ``default_pool=False``: the pod's node selector chooses its instance (:mod:`vkec2.fleet.choice`),
    which turns the default warm pool off as a launch annotation does.
    """
    annotations, uid = _metadata(pod)
    refuse_unsupported_volumes(pod)
    ann = _read_annotations(annotations)
    _validated(ann)
    refuse_daemonset_pod(settings, pod)
    citizen = settings.kubernetes
    images = (
        ImageChoice()
        if IMAGE_ID in ann
        else image_ami(citizen.images, pod, citizen.unmapped_images == "refuse")
    )
    user_tags = dict(settings.ec2.tags)
    if TAGS in ann:
        user_tags.update(_parse_tags(ann[TAGS]))
        problem = tags_problem(user_tags)
        if problem:
            raise _invalid(TAGS, problem)

    pool, explicit = _select_pool(settings, ann, default_pool, images.ami)
    base = settings.pool_launch_defaults(pool) if pool is not None else settings.ec2
    if pool is not None and explicit:
        _check_against_pool(pool, base, ann)
        if images.ami is not None and images.ami != base.image_id:
            raise _invalid(
                WARM_POOL,
                f"warm pool {pool.name!r} launches {base.image_id}, the pod's image maps to {images.ami}",
            )

    if SECURITY_GROUPS in ann:
        groups = _parse_groups(ann[SECURITY_GROUPS])
    else:
        groups = tuple(sorted(set(base.security_groups)))
    image_id = ann.get(IMAGE_ID, images.ami or base.image_id)
    if image_id is None and base.launch_template is not None:
        image_id = ""  # the launch template's AMI
    if image_id is None:
        where = f", image_id of warm pool {pool.name!r}," if pool is not None else ""
        raise InvalidPodSpec(
            f"no image for the pod: set the annotation {ANNOTATION_PREFIX}{IMAGE_ID}{where} or "
            "ec2.image_id in the configuration",
            reason=REASON_MISSING_IMAGE,
        )
    instance_type, fallback_types = _instance_types(ann, base)
    named = settings.host_pool(ann[HOST_POOL]) if HOST_POOL in ann else None
    if named is not None and named.instance_type and not ({INSTANCE_TYPE, INSTANCE_TYPES} & set(ann)):
        instance_type, fallback_types = named.instance_type, ()  # the pool's hosts decide the type
    where = f"{ANNOTATION_PREFIX}{HOST_POOL}"
    hosts = host_pool_for(settings.host_pools, ann.get(HOST_POOL), base.host_pool, instance_type, where)
    subnet_id, fallback_subnets = _subnets(ann, base, uid)
    configured = options_for(base).volumes
    extra: tuple[Volume, ...] = parse_volumes(ann[VOLUMES], configured) if VOLUMES in ann else ()
    capacity_type = choose_capacity_type(ann.get(CAPACITY_TYPE), base.capacity_type)
    refuse_spot_on_hosts(hosts.name if hosts is not None else "", capacity_type)
    refuse_unlisted(settings, _namespace(pod), ann)
    return LaunchParams(
        image_id=image_id,
        instance_type=instance_type,
        subnet_id=subnet_id,
        security_groups=groups,
        instance_profile=ann.get(INSTANCE_PROFILE, base.instance_profile),
        key_pair=ann.get(KEY_PAIR, base.key_pair),
        user_data=user_data_for(settings, instance_type),
        tags=tuple(sorted(user_tags.items())),
        warm_pool=pool.name if pool is not None else None,
        fallback_types=fallback_types if hosts is None else (),
        fallback_subnets=fallback_subnets if hosts is None else (),
        launch=options_for(base, extra),
        capacity_type=capacity_type,
        spot_max_price=settings.ec2.spot_max_price,
        host_pool=hosts.name if hosts is not None else "",
        image_note=images.note(),
    )
