"""Spot capacity as pure rules: the markets a capacity type tries, what a launch sends, interruptions.

A pod's capacity type (``ec2.capacity_type``, a warm pool's ``capacity_type``, or the
``compute.amazonaws.com/capacity-type`` annotation; the names are in :mod:`vkec2.contract`) is
``on-demand``, ``spot`` or ``spot-or-on-demand``. :func:`markets` is the order the capacity
fallback tries them in: for ``spot-or-on-demand`` every (instance type, zone) as Spot first, then
every one as on-demand, because the point of asking for Spot is its price: on-demand is the last
resort, not the next zone's alternative. A Spot launch sends :func:`market_options` (one-time
request, terminate on interruption, no maximum price unless ``ec2.spot_max_price`` names one, so
AWS caps the price at the on-demand price). A Spot refusal marks its offering unavailable under its
own key (:func:`offering_zone`), so on-demand is still tried for the same type and zone.
:func:`interruption` reads a DescribeInstances description for EC2's own word that it interrupted
a Spot instance (``InstanceLifecycle: spot`` with a ``Server.Spot*`` state reason), and
:func:`notice_message` words the agent's view of the instance-metadata notices
(:class:`~vkec2.domain.agents.SpotNotice`). Everything here is a pure function of plain values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vkec2.contract import CAPACITY_TYPES, ON_DEMAND, SPOT, SPOT_OR_ON_DEMAND, TAG_CAPACITY_TYPE
from vkec2.domain.agents import SpotNotice

#: The suffix of the zone of a Spot offering in the "no capacity" marks (on-demand has none).
SPOT_ZONE_SUFFIX = "/spot"
#: The instance lifecycle DescribeInstances shows for a Spot instance.
SPOT_LIFECYCLE = "spot"
#: State reasons EC2 gives a Spot instance it interrupted (terminated, stopped or hibernated).
SPOT_REASON_PREFIX = "Server.Spot"
#: The notice kind of a rebalance recommendation (the other kind is ``interruption``).
NOTICE_REBALANCE = "rebalance"


def capacity_type_problem(value: str) -> str | None:
    """Why ``value`` is not a capacity type, or None when it is one."""
    if value in CAPACITY_TYPES:
        return None
    return f"{value!r} is not a capacity type (one of {', '.join(CAPACITY_TYPES)})"


def choose_capacity_type(annotated: str | None, default: str) -> str:
    """The pod's capacity type: its annotation, else its pool's or ``ec2``'s. A
    ``karpenter.sh/capacity-type`` selector (:func:`selector_capacity_type`) sits between the two:
    :mod:`vkec2.fleet.choice` applies it when the pod has no annotation."""
    return annotated if annotated is not None else default


def selector_capacity_type(allowed: Sequence[str]) -> str | None:
    """The capacity type a ``karpenter.sh/capacity-type`` selector asks for (the markets it allows):
    only Spot is ``spot``, only on-demand is ``on-demand``, both is ``spot-or-on-demand`` (Spot
    first, as Karpenter prefers it); None when the pod's selector says nothing about it."""
    if SPOT in allowed:
        return SPOT_OR_ON_DEMAND if ON_DEMAND in allowed else SPOT
    return ON_DEMAND if ON_DEMAND in allowed else None


def markets(capacity_type: str) -> tuple[str, ...]:
    """The markets a pod of ``capacity_type`` is launched in, in the order they are tried."""
    if capacity_type == SPOT_OR_ON_DEMAND:
        return (SPOT, ON_DEMAND)
    if capacity_type == SPOT:
        return (SPOT,)
    return (ON_DEMAND,)


def is_spot(capacity_type: str) -> bool:
    """Whether a launch with ``capacity_type`` asks for Spot (the first market of a fallback)."""
    return markets(capacity_type)[0] == SPOT


def offering_zone(zone: str, market: str) -> str:
    """The zone an offering is marked under: Spot and on-demand of one zone are marked apart."""
    return f"{zone}{SPOT_ZONE_SUFFIX}" if market == SPOT else zone


def market_options(capacity_type: str, max_price: str | None = None) -> dict[str, Any]:
    """The RunInstances arguments of a launch in ``capacity_type``'s first market (none for on-demand)."""
    if not is_spot(capacity_type):
        return {}
    options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
    if max_price:
        options["MaxPrice"] = max_price
    return {"InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": options}}


def spot_tags(capacity_type: str) -> dict[str, str]:
    """The tag a Spot launch adds to its instance (the capacity type); none for on-demand."""
    return {TAG_CAPACITY_TYPE: SPOT} if is_spot(capacity_type) else {}


def instance_market(instance: Mapping[str, Any]) -> str:
    """The market an instance was launched in, from its description (``InstanceLifecycle``)."""
    return SPOT if instance.get("InstanceLifecycle") == SPOT_LIFECYCLE else ON_DEMAND


def interruption(instance: Mapping[str, Any] | None) -> str | None:
    """AWS's reason when ``instance`` is a Spot instance EC2 interrupted, else None."""
    if not instance or instance.get("InstanceLifecycle") != SPOT_LIFECYCLE:
        return None
    reason = instance.get("StateReason") or {}
    code = str(reason.get("Code", "")) if isinstance(reason, Mapping) else ""
    if not code.startswith(SPOT_REASON_PREFIX):
        return None
    message = str(reason.get("Message", "")) if isinstance(reason, Mapping) else ""
    return f"{code}: {message}" if message else code


def notice_message(instance_id: str, notice: SpotNotice) -> str:
    """The event message of an interruption notice or rebalance recommendation the agent saw."""
    if notice.kind == NOTICE_REBALANCE:
        at = f" (noticed {notice.time})" if notice.time else ""
        return (
            f"EC2 recommends rebalancing: Spot instance {instance_id} is at elevated risk of interruption{at}"
        )
    when = f" at {notice.time}" if notice.time else ""
    return f"EC2 will {notice.action or 'interrupt'} Spot instance {instance_id}{when} (interruption notice)"
