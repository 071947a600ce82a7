"""The RunInstances request of one launch, built from a pod's (or a pool member's) parameters.

:func:`run_instances_request` is the whole mapping from :class:`~vkec2.domain.podspec.LaunchParams`
to the keyword arguments of boto3's ``run_instances``, so the gateway only reads the AMI's root
device when needed and sends. Every request carries ``MetadataOptions`` (IMDSv2 required by
default) and never ``DisableApiTermination=true``: with a launch template, which might set it, the
request says ``DisableApiTermination=false``, because the fleet must always be able to terminate
what it launched. With a launch template only what the operator or the pod set is sent (an empty
image or instance type means "the template's"), and what is sent overrides the template. A Spot
launch carries its ``InstanceMarketOptions`` and the capacity-type tag (:mod:`vkec2.domain.spot`),
and a launch on a Dedicated Host its ``Placement`` (:func:`placement`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vkec2.domain.launchopts import RootDevice, block_device_mappings, metadata_options, template_spec
from vkec2.domain.podspec import LaunchParams
from vkec2.domain.spot import market_options, spot_tags


def run_instances_request(
    params: LaunchParams,
    tags: Mapping[str, str],
    token: str,
    root_device: RootDevice | None = None,
    count: int = 1,
) -> dict[str, Any]:
    """The keyword arguments of RunInstances for up to ``count`` instances with ``params`` (at least
    one: EC2 launches as many as it can), tagged at launch with the user tags and ``tags``,
    idempotent by ``token``; ``root_device`` is the AMI's."""
    options = params.launch
    every_tag = {**dict(params.tags), **tags, **spot_tags(params.capacity_type)}
    all_tags = [{"Key": k, "Value": v} for k, v in sorted(every_tag.items())]
    kwargs: dict[str, Any] = {
        "MinCount": 1,
        "MaxCount": count,
        "ClientToken": token,
        # The volumes carry the instance's tags too: a volume that outlives it is still attributable.
        "TagSpecifications": [{"ResourceType": kind, "Tags": all_tags} for kind in ("instance", "volume")],
        "MetadataOptions": metadata_options(options),
    }
    if params.image_id:
        kwargs["ImageId"] = params.image_id
    if params.instance_type:
        kwargs["InstanceType"] = params.instance_type
    if options.template is not None:
        kwargs["LaunchTemplate"] = template_spec(options.template)
        kwargs["DisableApiTermination"] = False
    if options.monitoring is not None or options.template is None:
        kwargs["Monitoring"] = {"Enabled": bool(options.monitoring)}
    mappings = block_device_mappings(options, params.instance_type, root_device)
    if mappings:
        kwargs["BlockDeviceMappings"] = mappings
    if params.subnet_id:
        kwargs["SubnetId"] = params.subnet_id
    if params.security_groups:
        kwargs["SecurityGroupIds"] = list(params.security_groups)
    if params.instance_profile:
        key = "Arn" if params.instance_profile.startswith("arn:") else "Name"
        kwargs["IamInstanceProfile"] = {key: params.instance_profile}
    if params.key_pair:
        kwargs["KeyName"] = params.key_pair
    if params.user_data:
        kwargs["UserData"] = params.user_data
    kwargs.update(market_options(params.capacity_type, params.spot_max_price))
    if placement(params):  # on a Dedicated Host (vkec2.fleet.placement chose it)
        kwargs["Placement"] = placement(params)
    return kwargs


def placement(params: LaunchParams) -> dict[str, str]:
    """RunInstances' ``Placement`` for a launch on a Dedicated Host (empty for shared tenancy)."""
    out: dict[str, str] = {}
    if params.tenancy:
        out["Tenancy"] = params.tenancy
    if params.host_resource_group_arn:
        out["HostResourceGroupArn"] = params.host_resource_group_arn
    elif params.host_id:
        out["HostId"] = params.host_id
    return out
