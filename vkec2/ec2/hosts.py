"""The EC2 gateway's Dedicated-host calls: AllocateHosts, DescribeHosts, ReleaseHosts and Placement.

:class:`HostCalls` is a part of :class:`vkec2.ec2.gateway.Ec2Gateway` (same client, accounting and error
mapping). A host is allocated one at a time with ``TagSpecifications`` carrying the cluster, its host pool and
its allocation number (``ResourceType=dedicated-host``) and a ``ClientToken``
(:func:`vkec2.domain.hosts.allocation_token`), so a retried allocation answers the same host;
``InsufficientHostCapacity`` and ``HostLimitExceeded`` come back as an :class:`~vkec2.errors.Ec2Error` with
their code (the caller moves on to the next zone, or waits). DescribeHosts is filtered by the cluster tag (and
checked again here); ReleaseHosts answers its refusals (a Mac host younger than 24 hours, a host with an
instance) in its ``Unsuccessful`` list rather than as an error: they are returned. :func:`placement` turns a
launch's host fields into RunInstances' ``Placement``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vkec2.config import Settings
from vkec2.contract import TAG_CLUSTER
from vkec2.domain.hosts import EC2_LIVE_STATES, HostRequest, tags_of
from vkec2.errors import Ec2Error

if TYPE_CHECKING:
    from types_boto3_ec2 import EC2Client


def jsonable_host(host: dict[str, Any]) -> dict[str, Any]:
    """A DescribeHosts entry with its AllocationTime as ISO text (ready to store as JSON)."""
    out = dict(host)
    for key in ("AllocationTime", "ReleaseTime"):
        value = out.get(key)
        if value is not None and not isinstance(value, str):
            out[key] = value.isoformat()
    return out


class HostCalls:
    """The Dedicated-host calls of the gateway (mixed into :class:`~vkec2.ec2.gateway.Ec2Gateway`)."""

    settings: Settings

    if TYPE_CHECKING:  # the gateway's own

        @property
        def client(self) -> EC2Client: ...

        def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any: ...

    def allocate_host(self, request: HostRequest, zone: str, token: str) -> str:
        """AllocateHosts of one host of ``request`` in ``zone``; its ID. Idempotent by ``token``."""
        kwargs: dict[str, Any] = {
            "AvailabilityZone": zone,
            "Quantity": 1,
            "AutoPlacement": "on" if request.auto_placement else "off",
            "HostRecovery": "on" if request.host_recovery else "off",
            "ClientToken": token,
            "TagSpecifications": [
                {"ResourceType": "dedicated-host", "Tags": [{"Key": k, "Value": v} for k, v in request.tags]}
            ],
        }
        if request.instance_type:
            kwargs["InstanceType"] = request.instance_type
        else:
            kwargs["InstanceFamily"] = request.instance_family
        answer = self._call("AllocateHosts", self.client.allocate_hosts, **kwargs)
        ids = answer.get("HostIds") or []
        if not ids:
            raise Ec2Error(f"AllocateHosts in {zone} answered no host ID", code="NoHostId")
        return str(ids[0])

    def cluster_hosts(self) -> list[dict[str, Any]]:
        """The cluster's hosts EC2 still has allocated (tag filter, every page; released ones left out)."""
        cluster = self.settings.cluster_name
        paginator = self.client.get_paginator("describe_hosts")
        found = self._call(
            "DescribeHosts",
            lambda **kw: list(paginator.paginate(**kw).search("Hosts[]")),
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]},
                {"Name": "state", "Values": list(EC2_LIVE_STATES)},
            ],
        )
        return [
            jsonable_host(h)
            for h in found
            if tags_of(h).get(TAG_CLUSTER) == cluster and h.get("State") in EC2_LIVE_STATES
        ]

    def release_hosts(self, host_ids: Sequence[str]) -> dict[str, str]:
        """ReleaseHosts; the hosts EC2 did not release, each with its code and message."""
        ids = list(dict.fromkeys(host_ids))
        if not ids:
            return {}
        answer = self._call("ReleaseHosts", self.client.release_hosts, HostIds=ids)
        refused: dict[str, str] = {}
        for item in answer.get("Unsuccessful") or []:
            error = item.get("Error") or {}
            refused[str(item.get("ResourceId", ""))] = f"{error.get('Code', '')}: {error.get('Message', '')}"
        return refused
