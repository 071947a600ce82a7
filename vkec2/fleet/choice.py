"""The create step's launch parameters with the instance choice applied: the I/O around the pure rule.

:meth:`InstanceChoice.params` is what the lifecycle calls instead of
:func:`vkec2.domain.podspec.launch_params`: it reads the pod's selector
(:func:`vkec2.domain.placement.selection`, keys outside the honoured ones logged and left to the
scheduler), computes the annotation- and pool-based parameters (a selector on an instance or zone
key turns the default warm pool off, as a launch annotation does), looks up what the pure rule
needs — the instance types' vCPUs, memory and architectures with DescribeInstanceTypes, the
subnets' zones with DescribeSubnets — and narrows the parameters with
:func:`vkec2.domain.placement.place`. A pod nothing can satisfy raises
:class:`~vkec2.errors.InvalidPodSpec` (row C1: Failed, nothing launched).

Type facts never change, so each worker process asks DescribeInstanceTypes once per type and keeps
the answer (a type EC2 does not know is remembered as unknown, logged, and left out of the choice);
a failed call is not remembered and raises, so the step is retried like any EC2 error. The subnets'
zones are cached by the gateway the same way. Nothing here depends on time or order: the same pod
spec always gets the same parameters, so its ClientToken stays valid across retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from vkec2.config import Settings
from vkec2.contract import (
    ANNOTATION_PREFIX,
    CAPACITY_TYPE_ANNOTATION,
    LABEL_ARCH,
    LABEL_CAPACITY_TYPE,
    LABEL_INSTANCE_TYPE,
    SPOT,
)
from vkec2.domain.allowlist import DEFAULT_NAMESPACE
from vkec2.domain.hosts import refuse_spot_on_hosts
from vkec2.domain.instances import Instance, type_and_zone
from vkec2.domain.placement import (
    INSTANCE_KEYS,
    ZONE_KEYS,
    Placement,
    TypeFacts,
    place,
    refuse_unlisted_values,
    selection,
    universe,
)
from vkec2.domain.podspec import INSTANCE_TYPE, INSTANCE_TYPES, LaunchParams, launch_params, user_data_for
from vkec2.domain.requests import Requests, pod_requests
from vkec2.domain.spot import instance_market, selector_capacity_type
from vkec2.errors import Ec2Error
from vkec2.ports import Ec2

log = logging.getLogger(__name__)

#: EC2's answer to DescribeInstanceTypes naming a type it does not offer (the whole call fails).
UNKNOWN_TYPE_CODE = "InvalidInstanceType"


def placed(instance: Instance) -> str:
    """``c6i.large in us-west-2a`` (``, spot`` added for a Spot instance): an instance's type and
    zone, as the pod's messages show them."""
    kind, zone = type_and_zone(instance)
    where = f"{kind} in {zone}" if kind and zone else kind or zone
    return f"{where}, spot" if instance_market(instance) == SPOT else where


def placement_note(instance: Instance) -> tuple[str, str] | tuple[()]:
    """(reason, message) of the ``vkec2.io/InstanceReady`` condition: the instance's type and zone."""
    kind, _ = type_and_zone(instance)
    return ("", placed(instance)) if kind else ()


def _metadata(pod: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    annotations = meta.get("annotations")
    namespace = meta.get("namespace")
    return (
        annotations if isinstance(annotations, Mapping) else {},
        namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE,
    )


class InstanceChoice:
    """Launch parameters for a pod, narrowed by its selector and fitted to its requests."""

    def __init__(self, settings: Settings, ec2: Ec2) -> None:
        self.settings = settings
        self.ec2 = ec2
        self._facts: dict[str, TypeFacts | None] = {}  # None: EC2 does not know the type
        self._lock = threading.Lock()  # one DescribeInstanceTypes per type per process

    def params(self, pod: Mapping[str, Any]) -> LaunchParams:
        """The pod's launch parameters; InvalidPodSpec when it cannot be launched."""
        sel = selection(pod)
        if sel.ignored:
            log.info(
                "node selector keys left to the scheduler (not instance choices): %s", ", ".join(sel.ignored)
            )
        params = launch_params(
            self.settings, pod, default_pool=not sel.constrains((*INSTANCE_KEYS, *ZONE_KEYS))
        )
        annotations, namespace = _metadata(pod)
        annotated = any(
            f"{ANNOTATION_PREFIX}{name}" in annotations for name in (INSTANCE_TYPE, INSTANCE_TYPES)
        )
        uni = universe(
            (params.instance_type, *params.fallback_types),
            sel,
            annotated=annotated,
            pooled=params.warm_pool is not None,
            choices=self.settings.ec2.instance_type_choices,
        )
        if not uni.by_requests and sel.terms is None:
            return params  # nothing to choose: the annotations, the pool or ec2 decide, as before
        if uni.named_by_selector:
            refuse_unlisted_values(
                self.settings, namespace, "instance_types", LABEL_INSTANCE_TYPE, uni.types, sel
            )
        facts = self.facts(uni.types) if uni.by_requests or sel.constrains((LABEL_ARCH,)) else {}
        subnets = (params.subnet_id, *params.fallback_subnets)
        known = [s for s in subnets if s]
        zones = self._zones(known) if known and sel.constrains(ZONE_KEYS) else {}
        requests = pod_requests(pod) if uni.by_requests else Requests()
        choice = place(sel, uni, requests=requests, facts=facts, subnets=subnets, zones=zones)
        for note in choice.notes:
            log.info("instance choice: %s", note)
        narrowed = self._narrowed(params, choice)
        hinted = selector_capacity_type(choice.capacity_types)
        if hinted is None or CAPACITY_TYPE_ANNOTATION in annotations or hinted == narrowed.capacity_type:
            return narrowed  # the annotation is stronger than the selector (vkec2.domain.spot)
        refuse_unlisted_values(self.settings, namespace, "capacity_types", LABEL_CAPACITY_TYPE, [hinted], sel)
        refuse_spot_on_hosts(narrowed.host_pool, hinted)
        # A pool member was launched in the pool's market: a pod asking for another is launched cold.
        return replace(narrowed, capacity_type=hinted, warm_pool=None)

    def launched_with(self, pod: Mapping[str, Any], instance: Instance) -> LaunchParams:
        """The parameters ``instance`` was launched with for ``pod``: its own, or a capacity fallback's
        (an instance of a fallback type is no change of type: it needs no replacement)."""
        params = self.params(pod)
        kind, _ = type_and_zone(instance)
        return replace(params, instance_type=kind) if kind in params.fallback_types else params

    def _narrowed(self, params: LaunchParams, choice: Placement) -> LaunchParams:
        first, *more = choice.instance_types
        subnet, *rest = choice.subnets
        # A warm-pool member has the pool's type and one of its subnets: claim only if both still hold.
        pool_kept = first == params.instance_type and len(choice.subnets) == 1 + len(params.fallback_subnets)
        if params.warm_pool is not None and not pool_kept:
            log.info(
                "warm pool %s not claimed from: the pod's selector narrows its type or zones",
                params.warm_pool,
            )
        return replace(
            params,
            instance_type=first,
            fallback_types=tuple(more),
            subnet_id=subnet,
            fallback_subnets=tuple(s for s in rest if s),
            user_data=params.user_data
            if first == params.instance_type
            else user_data_for(self.settings, first),
            warm_pool=params.warm_pool if pool_kept else None,
        )

    def _zones(self, subnets: Sequence[str]) -> dict[str, str]:
        """The subnets' zones; a zone not known (DescribeSubnets failed) is retried, never guessed."""
        zones = self.ec2.subnet_zones(subnets)
        missing = [s for s in subnets if s not in zones]
        if missing:
            raise Ec2Error(
                f"DescribeSubnets: no zone known for {', '.join(missing)} (the pod's zone selector needs it)",
                retryable=True,
                reason="EC2Unavailable",
            )
        return zones

    def facts(self, names: Sequence[str]) -> dict[str, TypeFacts]:
        """The facts of the types EC2 knows among ``names`` (DescribeInstanceTypes once per type)."""
        if any(name not in self._facts for name in names):
            with self._lock:
                missing = [name for name in dict.fromkeys(names) if name not in self._facts]
                if missing:
                    self._facts.update(self._describe(missing))
        return {name: found for name in names if (found := self._facts.get(name)) is not None}

    def _describe(self, names: Sequence[str]) -> dict[str, TypeFacts | None]:
        try:
            found = self.ec2.describe_instance_types(names)
        except Ec2Error as exc:
            if exc.code != UNKNOWN_TYPE_CODE:
                raise
            if len(names) == 1:
                found = {}
            else:  # one unknown type fails the whole call: ask for each alone
                return {k: v for name in names for k, v in self._describe([name]).items()}
        out: dict[str, TypeFacts | None] = {}
        for name in names:
            if name in found:
                out[name] = TypeFacts.of(found[name])
            else:
                log.warning("DescribeInstanceTypes does not know %s: left out of the instance choice", name)
                out[name] = None
        return out
