"""The instance choice from the pod: its nodeSelector and required node affinity, and its requests.

:func:`selection` reads ``spec.nodeSelector`` and
``spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`` as Kubernetes
defines them (the selector's pairs and each term's ``matchExpressions`` are ANDed, the terms ORed;
operators ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt``, ``Lt``) and keeps the
requirements on the keys that describe an instance (:data:`TYPE_KEYS`, :data:`ZONE_KEYS`, the
Karpenter-style family, category and generation, ``kubernetes.io/arch``; the markets
``karpenter.sh/capacity-type`` allows are handed on, and :mod:`vkec2.fleet.choice` turns them
into the pod's capacity type with :func:`vkec2.domain.spot.selector_capacity_type`). The virtual
node's own labels (``kubernetes.io/os``,
``type=virtual-kubelet``, ``kubernetes.io/hostname`` …) chose the node, which the scheduler has
already done, and are left alone; any other key is left alone too and reported in
:attr:`Selection.ignored` for the caller to log. A malformed selector raises
:class:`~vkec2.errors.InvalidPodSpec` with reason ``InvalidNodeAffinity``.

:func:`universe` says which instance types are considered (the pod's annotated or warm-pool types,
else the types an ``In`` on the instance-type key names, else ``ec2.instance_type_choices``, else
``ec2.instance_type`` and its fallbacks) and :func:`place` narrows them with the selector, and — for
the configured choices — sorts them smallest first (vCPUs, then memory, then name) and keeps those
the pod's requests (:mod:`vkec2.domain.requests`) fit in: the first is launched, the others are the
capacity fallbacks. Subnets are narrowed to the zones the selector allows. A pod nothing satisfies
raises ``NoMatchingInstanceType``, ``NoMatchingZone`` or ``NoInstanceTypeFits``. Everything here
is pure: the type facts (:class:`TypeFacts`, from DescribeInstanceTypes) and the subnets' zones are
looked up by :mod:`vkec2.fleet.choice`, so the same pod always gets the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vkec2.config import Settings
from vkec2.config.allowlist import ANY, Kind
from vkec2.contract import (
    INVALID_NODE_AFFINITY,
    LABEL_ARCH,
    LABEL_CAPACITY_TYPE,
    LABEL_INSTANCE_CATEGORY,
    LABEL_INSTANCE_FAMILY,
    LABEL_INSTANCE_GENERATION,
    LABEL_INSTANCE_TYPE,
    LABEL_INSTANCE_TYPE_BETA,
    LABEL_ZONE,
    LABEL_ZONE_BETA,
    NO_INSTANCE_TYPE_FITS,
    NO_MATCHING_INSTANCE_TYPE,
    NO_MATCHING_ZONE,
    NODE_LABEL_KEYS,
    ON_DEMAND,
    SPOT,
)
from vkec2.domain.allowlist import REASON_NOT_ALLOWED, configured
from vkec2.domain.requests import Requests
from vkec2.errors import InvalidPodSpec

TYPE_KEYS = (LABEL_INSTANCE_TYPE, LABEL_INSTANCE_TYPE_BETA)
ZONE_KEYS = (LABEL_ZONE, LABEL_ZONE_BETA)
#: The keys of an instance type's own labels (its name, family, category, generation, arch).
INSTANCE_KEYS = (
    *TYPE_KEYS,
    LABEL_INSTANCE_FAMILY,
    LABEL_INSTANCE_CATEGORY,
    LABEL_INSTANCE_GENERATION,
    LABEL_ARCH,
)
#: Every key the choice honours.
HONOURED_KEYS = (*INSTANCE_KEYS, *ZONE_KEYS, LABEL_CAPACITY_TYPE)
#: The values of the ``karpenter.sh/capacity-type`` label (the markets; vkec2.domain.spot maps them).
LABEL_CAPACITY_VALUES = (ON_DEMAND, SPOT)
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
#: At most this many instance types are kept for one pod (its type and the capacity fallbacks).
MAX_TYPES = 10
#: EC2's architecture names -> the ``kubernetes.io/arch`` value, in order of preference.
ARCHES = {"x86_64": "amd64", "x86_64_mac": "amd64", "arm64": "arm64", "arm64_mac": "arm64"}
_FAMILY = re.compile(r"(?P<category>[a-z]+)(?P<generation>[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


@dataclass(frozen=True)
class TypeFacts:
    """What DescribeInstanceTypes says of one instance type that the choice needs."""

    name: str
    vcpus: int
    memory_mib: int
    architectures: tuple[str, ...] = ()

    @classmethod
    def of(cls, description: Mapping[str, Any]) -> TypeFacts:
        """From one ``InstanceTypes[]`` entry of DescribeInstanceTypes."""
        return cls(
            name=str(description.get("InstanceType", "")),
            vcpus=int(description.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
            memory_mib=int(description.get("MemoryInfo", {}).get("SizeInMiB", 0)),
            architectures=tuple(description.get("ProcessorInfo", {}).get("SupportedArchitectures", ())),
        )

    def fits(self, requests: Requests) -> bool:
        return self.vcpus * 1000 >= requests.millicpu and self.memory_mib * (1 << 20) >= requests.memory

    @property
    def size(self) -> tuple[int, int, str]:
        """The order of "smallest": fewest vCPUs, then least memory, then the name."""
        return (self.vcpus, self.memory_mib, self.name)


@dataclass(frozen=True)
class Requirement:
    """One ``key operator values`` requirement on a label."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        if self.operator == "DoesNotExist":
            return value is None
        if value is None or not _INTEGER.fullmatch(value):
            return False
        bound = int(self.values[0])
        return int(value) > bound if self.operator == "Gt" else int(value) < bound

    def __str__(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{self.key} {self.operator}"
        return f"{self.key} {self.operator} [{', '.join(self.values)}]"


Term = tuple[Requirement, ...]


@dataclass(frozen=True)
class Selection:
    """The pod's requirements on the honoured keys: terms ORed, each term's requirements ANDed.

    ``terms`` is None when nothing constrains the instance (no selector, or a term with no honoured
    key: the node alone satisfied it); an empty tuple when no term can match anything.
    """

    terms: tuple[Term, ...] | None = None
    ignored: tuple[str, ...] = ()
    source: str = ""  # "nodeSelector", "node affinity" or both, for messages

    def requirements(self) -> Iterable[Requirement]:
        return (r for term in self.terms or () for r in term)

    def constrains(self, keys: Sequence[str]) -> bool:
        return any(r.key in keys for r in self.requirements())

    def matches(self, labels: Mapping[str, str], skip: Sequence[str] = ()) -> bool:
        """Whether an instance with ``labels`` satisfies some term (requirements on ``skip`` aside)."""
        if self.terms is None:
            return True
        return any(
            all(r.matches(labels) for r in term if r.key not in skip and r.key != LABEL_CAPACITY_TYPE)
            for term in self.terms
        )

    def named_types(self) -> tuple[str, ...]:
        """The types an ``In`` on the instance-type key names, when every term has one; else ()."""
        named: list[str] = []
        for term in self.terms or ():
            first = next((r for r in term if r.key in TYPE_KEYS and r.operator == "In"), None)
            if first is None:
                return ()
            named.extend(first.values)
        return tuple(dict.fromkeys(named))

    def capacity_types(self) -> tuple[str, ...]:
        """The markets (on-demand, spot) some term allows, () when the selector requires none."""
        if not self.constrains((LABEL_CAPACITY_TYPE,)):
            return ()
        allowed = {
            kind
            for term in self.terms or ()
            for kind in LABEL_CAPACITY_VALUES
            if all(r.matches({LABEL_CAPACITY_TYPE: kind}) for r in term if r.key == LABEL_CAPACITY_TYPE)
        }
        if not allowed:
            raise self.unmatched(
                NO_MATCHING_INSTANCE_TYPE, f"no capacity type ({', '.join(LABEL_CAPACITY_VALUES)})"
            )
        return tuple(kind for kind in LABEL_CAPACITY_VALUES if kind in allowed)

    def __str__(self) -> str:
        if self.terms is None:
            return "no requirement"
        if not self.terms:
            return "no term that can match"
        parts = [" and ".join(str(r) for r in term) for term in self.terms]
        return " or ".join(f"({p})" if len(parts) > 1 else p for p in parts)

    def unmatched(self, reason: str, what: str) -> InvalidPodSpec:
        return InvalidPodSpec(f"{what} satisfies the pod's {self.source}: {self}", reason=reason)


def _bad(where: str, problem: str) -> InvalidPodSpec:
    return InvalidPodSpec(f"{where}: {problem}", reason=INVALID_NODE_AFFINITY)


def _requirement(raw: object, where: str) -> Requirement:
    if not isinstance(raw, Mapping):
        raise _bad(where, "not a mapping")
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("values")
    if not isinstance(key, str) or not key:
        raise _bad(where, "key is missing or not a string")
    if operator not in OPERATORS:
        raise _bad(where, f"operator {operator!r} is not one of {', '.join(OPERATORS)}")
    if values is None:
        values = []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _bad(where, "values is not a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise _bad(where, f"{operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise _bad(where, f"{operator} takes no values")
    if operator in ("Gt", "Lt") and (len(values) != 1 or not _INTEGER.fullmatch(values[0])):
        raise _bad(where, f"{operator} needs exactly one integer value, got {values!r}")
    return Requirement(key, str(operator), tuple(values))


def _node_selector(spec: Mapping[str, Any]) -> Term:
    raw = spec.get("nodeSelector")
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise _bad("spec.nodeSelector", "not a mapping of strings to strings")
    return tuple(Requirement(k, "In", (v,)) for k, v in raw.items())


def _required_terms(spec: Mapping[str, Any]) -> list[Term] | None:
    affinity = spec.get("affinity") or {}
    if not isinstance(affinity, Mapping):
        raise _bad("spec.affinity", "not a mapping")
    node = affinity.get("nodeAffinity") or {}
    if not isinstance(node, Mapping):
        raise _bad("spec.affinity.nodeAffinity", "not a mapping")
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    where = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    if not isinstance(terms, list) or not terms:
        raise _bad(where, "nodeSelectorTerms must be a non-empty list")
    out: list[Term] = []
    for i, term in enumerate(terms):
        at = f"{where}.nodeSelectorTerms[{i}]"
        if not isinstance(term, Mapping):
            raise _bad(at, "not a mapping")
        expressions = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not isinstance(expressions, list) or not isinstance(fields, list):
            raise _bad(at, "matchExpressions and matchFields must be lists")
        for j, item in enumerate(fields):  # node fields (metadata.name): the scheduler's business
            _requirement(item, f"{at}.matchFields[{j}]")
        if not expressions and not fields:
            continue  # an empty term matches no node (Kubernetes): it cannot be what placed the pod
        reqs = tuple(_requirement(e, f"{at}.matchExpressions[{j}]") for j, e in enumerate(expressions))
        out.append(reqs)
    return out


def selection(pod: Mapping[str, Any]) -> Selection:
    """The pod's requirements on the honoured keys (see the module docstring)."""
    spec = pod.get("spec") if isinstance(pod, Mapping) else None
    if not isinstance(spec, Mapping):
        return Selection()
    selector = _node_selector(spec)
    required = _required_terms(spec)
    sources = [name for name, there in (("nodeSelector", selector), ("node affinity", required)) if there]
    terms = [selector + term for term in required] if required is not None else [selector]
    ignored = sorted(
        {r.key for term in terms for r in term if r.key not in HONOURED_KEYS and r.key not in NODE_LABEL_KEYS}
    )
    kept = [tuple(r for r in term if r.key in HONOURED_KEYS) for term in terms]
    if any(not term for term in kept):  # a term the node alone satisfies: the instance is free
        return Selection(None, tuple(ignored), " and ".join(sources))
    return Selection(tuple(kept), tuple(ignored), " and ".join(sources))


def type_labels(name: str, facts: TypeFacts | None) -> dict[str, str]:
    """The labels an instance of type ``name`` carries (the arch only when its facts are known)."""
    family = name.split(".", 1)[0]
    labels = {LABEL_INSTANCE_TYPE: name, LABEL_INSTANCE_TYPE_BETA: name, LABEL_INSTANCE_FAMILY: family}
    match = _FAMILY.match(family)
    if match is not None:
        labels[LABEL_INSTANCE_CATEGORY] = match["category"]
        if match["generation"]:
            labels[LABEL_INSTANCE_GENERATION] = match["generation"]
    if facts is not None:
        arch = next((ARCHES[a] for a in ARCHES if a in facts.architectures), None)
        if arch is not None:
            labels[LABEL_ARCH] = arch
    return labels


def zone_labels(zone: str | None) -> dict[str, str]:
    return {LABEL_ZONE: zone, LABEL_ZONE_BETA: zone} if zone else {}


@dataclass(frozen=True)
class Universe:
    """The instance types considered for a pod, in order, and how they were chosen."""

    types: tuple[str, ...]
    by_requests: bool = False  # the configured choices: sorted by size and fitted to the requests
    named_by_selector: bool = False  # an In on the instance-type key names them (allowlist applies)


def universe(
    own: Sequence[str], sel: Selection, *, annotated: bool, pooled: bool, choices: Sequence[str]
) -> Universe:
    """Which types are considered: ``own`` (the pod's launch parameters: annotated, from a warm
    pool, or ``ec2``'s) unless the selector names types or ``choices`` are configured."""
    if annotated or pooled:
        return Universe(tuple(own))
    named = sel.named_types()
    if named:
        return Universe(named, named_by_selector=True)
    if choices:
        return Universe(tuple(choices), by_requests=True)
    return Universe(tuple(own))


def refuse_unlisted_values(
    settings: Settings, namespace: str, kind: Kind, label: str, values: Sequence[str], sel: Selection
) -> None:
    """Values a selector chooses (instance types on ``label``, a capacity type) are held to the same
    rule as the annotation that names them: configured, or on the namespace's allowlist ``kind``."""
    allowed = settings.allowlists.allowed(namespace, kind)
    if ANY in allowed:
        return
    known = configured(settings)[kind]
    for name in values:
        if name not in known and name not in allowed:
            raise InvalidPodSpec(
                f"{sel.source} {label}: {name!r} is not allowed in namespace {namespace!r}: "
                f"neither configured nor listed in {settings.allowlists.source(namespace, kind)}",
                reason=REASON_NOT_ALLOWED,
            )


@dataclass(frozen=True)
class Placement:
    """The narrowed launch: the types (first: the pod's), the subnets (first: the pod's), the markets."""

    instance_types: tuple[str, ...]
    subnets: tuple[str | None, ...]
    capacity_types: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)


def place(
    sel: Selection,
    uni: Universe,
    *,
    requests: Requests,
    facts: Mapping[str, TypeFacts],
    subnets: Sequence[str | None],
    zones: Mapping[str, str],
) -> Placement:
    """Narrow ``uni`` and ``subnets`` to what ``sel`` allows and (by requests) what fits."""
    pairs = {
        (name, subnet)
        for name in uni.types
        for subnet in subnets
        if sel.matches({**type_labels(name, facts.get(name)), **zone_labels(zones.get(subnet or ""))})
    }
    types = [name for name in uni.types if any((name, s) in pairs for s in subnets)]
    if not types:
        zone_problem = sel.constrains(ZONE_KEYS) and any(
            sel.matches(type_labels(name, facts.get(name)), skip=ZONE_KEYS) for name in uni.types
        )
        if zone_problem:
            known = sorted({zones[s] for s in subnets if s and s in zones})
            where = f"zones {', '.join(known)}" if known else "no subnet with a known zone (ec2.subnets)"
            raise sel.unmatched(NO_MATCHING_ZONE, f"no configured subnet ({where})")
        raise sel.unmatched(NO_MATCHING_INSTANCE_TYPE, f"no instance type of {', '.join(uni.types)}")
    notes: list[str] = []
    if uni.by_requests:
        sized = sorted((facts[name] for name in types if name in facts), key=lambda f: f.size)
        fitting = [f.name for f in sized if f.fits(requests)]
        if not fitting:
            largest = ", ".join(f"{f.name} ({f.vcpus} vCPU, {f.memory_mib} MiB)" for f in sized[-2:])
            raise InvalidPodSpec(
                f"the pod requests {requests}, more than any allowed instance type offers "
                f"(the largest: {largest or 'none known to EC2'})",
                reason=NO_INSTANCE_TYPE_FITS,
            )
        notes.append(f"{fitting[0]} is the smallest allowed type that fits {requests}")
        types = fitting
    kept_types = tuple(types[:MAX_TYPES])
    kept_subnets = tuple(s for s in subnets if any((t, s) in pairs for t in kept_types))
    return Placement(kept_types, kept_subnets, sel.capacity_types(), tuple(notes))
