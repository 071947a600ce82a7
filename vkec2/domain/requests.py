"""A pod's cpu and memory requests, summed the way Kubernetes sums them, from Kubernetes quantities.

:func:`parse_quantity` reads the Kubernetes quantity syntax (``500m``, ``2``, ``1.5``, ``20Gi``,
``128M``, ``1e3``: a decimal number with a binary suffix ``Ki``…``Ei``, a decimal suffix ``m``,
``k``, ``M``, ``G``, ``T``, ``P``, ``E``, or an exponent). :func:`pod_requests` computes a pod's
effective requests as the scheduler does: the sum over its containers, or the largest init
container when that is more (an init container with ``restartPolicy: Always`` is a sidecar that
keeps running, so it counts towards the sum and towards every later init container), plus
``spec.overhead``. A container without ``requests`` for a resource but with ``limits`` requests its
limit (the API server's defaulting; standalone manifests are not defaulted). Anything malformed
raises :class:`~vkec2.errors.InvalidPodSpec` with reason ``InvalidResourceRequest`` naming the
container and the value. The instance choice (:mod:`vkec2.domain.placement`) fits these to types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from vkec2.contract import INVALID_RESOURCE_REQUEST
from vkec2.errors import InvalidPodSpec

QUANTITY = re.compile(
    r"\+?(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?[0-9]+)?"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
#: The largest exponent accepted (Kubernetes refuses larger quantities too).
_MAX_EXPONENT = 30


@dataclass(frozen=True)
class Requests:
    """A pod's effective requests: cpu in millicores, memory in bytes (0: none requested)."""

    millicpu: int = 0
    memory: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.millicpu + other.millicpu, self.memory + other.memory)

    def most(self, other: Requests) -> Requests:
        """Each resource's larger value."""
        return Requests(max(self.millicpu, other.millicpu), max(self.memory, other.memory))

    def __str__(self) -> str:
        cpu = f"{self.millicpu / 1000:g}" if self.millicpu % 1000 == 0 else f"{self.millicpu}m"
        return f"cpu {cpu}, memory {_mib(self.memory)}"


def _mib(size: int) -> str:
    if size % (1 << 30) == 0:
        return f"{size >> 30}Gi"
    return f"{math.ceil(size / (1 << 20))}Mi"


def _invalid(where: str, problem: str) -> InvalidPodSpec:
    return InvalidPodSpec(f"{where}: {problem}", reason=INVALID_RESOURCE_REQUEST)


def parse_quantity(value: object, where: str = "quantity") -> Decimal:
    """The value of a Kubernetes quantity (a string, or a plain number); InvalidPodSpec otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _invalid(where, f"not a quantity: {value!r}")
    text = str(value).strip()
    match = QUANTITY.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise _invalid(where, f"{shown!r} is not a Kubernetes quantity like 500m, 2 or 20Gi")
    try:
        number = Decimal(match["num"])
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        raise _invalid(where, f"{text!r} is not a number") from None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * Decimal(1024 ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise _invalid(where, f"{text!r} is out of range")
        return number.scaleb(exponent)
    return number


def _resources(container: Mapping[str, Any], where: str) -> Requests:
    resources = container.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise _invalid(where, "resources is not a mapping")
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    if not isinstance(requests, Mapping) or not isinstance(limits, Mapping):
        raise _invalid(where, "resources.requests and resources.limits must be mappings")
    values: dict[str, int] = {}
    for name, scale in (("cpu", 1000), ("memory", 1)):
        raw = requests.get(name, limits.get(name))
        if raw is None:
            values[name] = 0
            continue
        amount = parse_quantity(raw, f"{where} {name}")
        values[name] = math.ceil(amount * scale)
    return Requests(values["cpu"], values["memory"])


def _containers(spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = spec.get(key) or []
    if not isinstance(items, list) or not all(isinstance(c, Mapping) for c in items):
        raise _invalid(f"spec.{key}", "not a list of containers")
    return items


def pod_requests(pod: Mapping[str, Any]) -> Requests:
    """The pod's effective cpu/memory requests (see the module docstring)."""
    spec = pod.get("spec") if isinstance(pod, Mapping) else None
    if not isinstance(spec, Mapping):
        return Requests()
    total = Requests()
    for i, container in enumerate(_containers(spec, "containers")):
        total += _resources(container, f"container {container.get('name', i)!s}")
    sidecars = Requests()
    init_peak = Requests()
    for i, container in enumerate(_containers(spec, "initContainers")):
        own = _resources(container, f"init container {container.get('name', i)!s}")
        if container.get("restartPolicy") == "Always":  # a sidecar: runs on beside what follows
            sidecars += own
            init_peak = init_peak.most(sidecars)
        else:
            init_peak = init_peak.most(own + sidecars)
    effective = (total + sidecars).most(init_peak)
    overhead = spec.get("overhead")
    if overhead:
        effective += _resources({"resources": {"requests": overhead}}, "spec.overhead")
    return effective
