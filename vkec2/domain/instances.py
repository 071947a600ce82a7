"""EC2 instances as the fleet sees them: the Instance description, the fleet's tags and launch idempotency.

An :data:`Instance` is a boto3 EC2 Instance description as a JSON-ready dict (datetimes as ISO
strings). Instances are tagged at launch with the cluster, the virtual node and the pod's UID and
namespace/name (:func:`pod_tags`; the tag keys are in :mod:`vkec2.contract`), so the tags are the
durable record of which pod owns an instance; warm-pool members carry the pool's name and state
instead. :func:`client_token` is the ``RunInstances`` ClientToken of one launch attempt of a pod (and
of one set of launch parameters), so a retried call returns the same instance. All of it is pure:
the EC2 gateway and the in-memory fakes of the tests share it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vkec2.contract import TAG_CLUSTER, TAG_NODE, TAG_POD_NAME, TAG_POD_NAMESPACE, TAG_POD_UID

Instance = dict[str, Any]

#: Instance states in which an instance still belongs to its pod (or pool).
LIVE_STATES = ("pending", "running", "stopping", "stopped")


def client_token(uid: str, attempt: int, variant: str = "") -> str:
    """The idempotency token of one launch attempt of a pod: at most 64 ASCII characters.

    ``variant`` names other launch parameters than the pod's own (a fallback subnet or instance
    type after a capacity error): EC2 refuses a token reused with different parameters.
    """
    token = f"vkec2-{uid}-{attempt}" + (f"-{variant}" if variant else "")
    if len(token) > 64:
        token = "vkec2-" + hashlib.sha256(token.encode()).hexdigest()[:58]
    return token


def token_attempt(uid: str, token: str) -> int | None:
    """The attempt a ClientToken of pod ``uid`` was made for (:func:`client_token`), or None.

    A token hashed down to 64 characters names no attempt (a pod UID is 36 characters, so only a
    foreign or malformed UID leads there).
    """
    match = re.fullmatch(rf"vkec2-{re.escape(uid)}-(\d+)(?:-[0-9a-f]+)?", token)
    return int(match.group(1)) if match else None


def highest_attempt(uid: str, instances: Iterable[Mapping[str, Any]]) -> int | None:
    """The highest attempt among the ClientTokens of ``instances`` (DescribeInstances' ``ClientToken``)."""
    seen = [token_attempt(uid, str(i.get("ClientToken") or "")) for i in instances]
    return max((a for a in seen if a is not None), default=None)


def pool_token(scope: str, slot: int) -> str:
    """The ClientToken of a warm pool's launch slot ``slot`` (``scope`` names the cluster and pool)."""
    return f"vkec2-pool-{scope}-{slot}"


def pool_slot(scope: str, token: str) -> int | None:
    """The slot a warm pool's ClientToken (:func:`pool_token`, maybe with a fallback's suffix) was for."""
    match = re.fullmatch(rf"vkec2-pool-{re.escape(scope)}-(\d+)(?:-[0-9a-f]+)?", token)
    return int(match.group(1)) if match else None


#: The parts of an Instance description the fleet reads (its type, zone and market, state and why,
#: addresses, launch token and time, tags, host and image): :func:`slim` keeps these and drops the rest
#: (block devices, network interfaces, CPU and metadata options ...: most of a description's size).
FLEET_FIELDS = (
    "InstanceId",
    "InstanceType",
    "ImageId",
    "State",
    "StateReason",
    "Placement",
    "PrivateIpAddress",
    "PublicIpAddress",
    "Ipv6Address",
    "ClientToken",
    "LaunchTime",
    "Tags",
    "InstanceLifecycle",
    "SpotInstanceRequestId",
    "SubnetId",
    "VpcId",
    "IamInstanceProfile",
    "Platform",
)


def slim(instance: Mapping[str, Any]) -> Instance:
    """``instance`` with only the :data:`FLEET_FIELDS` it has: what the store keeps of a description."""
    return {key: instance[key] for key in FLEET_FIELDS if key in instance}


def tag_map(instance: Mapping[str, Any]) -> dict[str, str]:
    """An instance's tags as a ``Key -> Value`` dict."""
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def pod_tags(cluster: str, pod: Mapping[str, Any], node: str) -> dict[str, str]:
    """The tags an instance of ``pod`` (a Kubernetes Pod as a JSON dict) on ``node`` is launched with."""
    meta = pod.get("metadata", {})
    return {
        TAG_CLUSTER: cluster,
        TAG_NODE: node,
        TAG_POD_UID: str(meta.get("uid", "")),
        TAG_POD_NAMESPACE: str(meta.get("namespace", "default")),
        TAG_POD_NAME: str(meta.get("name", "")),
        "Name": f"{meta.get('namespace', 'default')}/{meta.get('name', '')}",
    }


def type_and_zone(instance: Mapping[str, Any]) -> tuple[str, str]:
    """The instance type and Availability Zone of an Instance description ("" when not given)."""
    kind = instance.get("InstanceType") or ""
    placement = instance.get("Placement")
    zone = placement.get("AvailabilityZone") if isinstance(placement, Mapping) else ""
    return str(kind), str(zone or "")
