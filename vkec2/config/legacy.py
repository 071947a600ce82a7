"""The original Go provider's ``config.json``, mapped onto :class:`~vkec2.config.model.Settings`.

A file is legacy when any top-level key is one of the provider's PascalCase keys
(:data:`LEGACY_TOP_LEVEL`). The key list is the union of the ``ProviderConfig`` structs of
github.com/awslabs/aws-virtual-kubelet at every tag and every commit that changed
``internal/config/config.go``: tag ``v0.5.2+opensource`` (ee2e1fa: also ``NodeName``, no agent
``Port``, ``WarmPoolConfig.DesiredCount`` as a JSON string), 0aad1f9 and e2f41a0 on main (the AWS
client timeouts), and tag ``v0.5.3`` (5755e9a, unchanged up to main 3c46ea5: ``StatusIntervalSeconds``,
``HealthConfig.StreamRetryIntervalSeconds``, ``VKVMAgentConnectionConfig.KeepaliveEnabled``, no
``UnhealthyMaxCount``), plus ``HttpClientTimeoutSeconds`` from one of its example ConfigMaps (read by
no release). Every such key is accepted: a key with a meaning here is mapped (:class:`Key` ``to``),
one without is accepted with a warning naming it and why (``why``), and ``InitData`` is never used as
user data (the original wrapped it in a JSON document for the bootstrap software of its own AMIs;
vkec2 always launches its agent installer). Keys match case-insensitively, like Go's JSON decoder;
Go's zero values (empty string, null) mean "not set"; ``WarmPoolConfig`` entries become
``warm_pools`` named ``pool-N``; new-style keys may stand alongside. A key that no release ever had
is an error naming it (a typo would otherwise silently keep a default). Every mapped key records its
:class:`~vkec2.config.errors.Origin` so validation errors name the legacy spelling, and a
:class:`Step` per key when asked (``vkec2 migrate``). Documented in docs/configuration.md ("The
original provider's config.json") and docs/migrating.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from vkec2.config.errors import Collector, Origin, kind, render
from vkec2.config.model import STEP_EC2_CALLS, CelerySettings, Settings


@dataclass(frozen=True)
class Key:
    """One key of the original config: the setting it maps to, or why it is ignored."""

    to: tuple[str, ...] | None = None
    why: str = ""
    #: Mapped only when no other key of the file sets the same setting (else ignored with a warning).
    weak: bool = False
    #: A smaller number is raised to this, with a warning (the floor the original's gRPC applied).
    floor: float | None = None


@dataclass(frozen=True)
class Step:
    """What became of one legacy key: ``target`` (a dotted settings path) or None and ``note``."""

    label: str
    value: Any
    target: str | None
    note: str = ""


_Table = dict[str, "Key | _Table"]

_INIT_DATA = (
    "never used as user data: vkec2 launches every instance with its agent installer (the original "
    "wrapped InitData in a JSON document for the bootstrap software of its own AMIs)"
)

#: Legacy key -> :class:`Key` or a nested section; see the module docstring for the releases.
_LEGACY: _Table = {
    "ClusterName": Key(("cluster_name",)),
    "Region": Key(("region",)),
    "ManagementSubnet": Key(why="no longer needed (the producer's pod IP is the node IP)"),
    "NodeName": Key(why="never read by the original (its node was named after its ENI); set node.name"),
    "AWSClientTimeoutSeconds": Key(("aws", "read_timeout_seconds")),
    "AWSClientDialerTimeoutSeconds": Key(("aws", "connect_timeout_seconds")),
    "StatusIntervalSeconds": Key(("status_interval_seconds",)),
    "HttpClientTimeoutSeconds": Key(
        why="read by no release (it appeared only in an example ConfigMap); AWSClientTimeoutSeconds "
        "is the AWS timeout"
    ),
    "VMConfig": {"DefaultAMI": Key(("ec2", "image_id")), "InitData": Key(why=_INIT_DATA)},
    "BootstrapAgent": {
        "S3Bucket": Key(("bootstrap", "s3_bucket")),
        "S3Key": Key(("bootstrap", "s3_key")),
        "InitData": Key(("bootstrap", "init_data"), why="kept as bootstrap.init_data but " + _INIT_DATA),
        # Never read by the original either; the port it dialled is VKVMAgentConnectionConfig.Port.
        "GRPCPort": Key(("agent", "port"), weak=True),
    },
    "HealthConfig": {
        "UnhealthyThresholdCount": Key(("health", "unhealthy_threshold")),
        # The Go provider documented UnhealthyMaxCount as "maximum failure results before forcing
        # the provider to take action" (and never used it). The nearest vkec2 notion is the count
        # of failed checks after which the pod is given up on as Unknown.
        "UnhealthyMaxCount": Key(("health", "unknown_threshold")),
        "HealthCheckIntervalSeconds": Key(("health", "interval_seconds")),
        "StreamRetryIntervalSeconds": Key(
            why="vkec2 holds no health streams: the sweep polls every agent each health.interval_seconds"
        ),
    },
    "VKVMAgentConnectionConfig": {
        "Port": Key(("agent", "port")),
        "TimeoutSeconds": Key(("agent", "call_timeout_seconds")),
        "MinConnectTimeoutSeconds": Key(("agent", "connect_timeout_seconds")),
        "HealthCheckIntervalSeconds": Key(
            why="never read by the original (HealthConfig.HealthCheckIntervalSeconds set its interval)"
        ),
        "Backoff": {
            "BaseDelaySeconds": Key(("agent", "backoff", "base_delay_seconds")),
            "Multiplier": Key(("agent", "backoff", "multiplier")),
            "Jitter": Key(("agent", "backoff", "jitter")),
            "MaxDelaySeconds": Key(("agent", "backoff", "max_delay_seconds")),
        },
        "KeepaliveEnabled": Key(
            why="vkec2 always sends keepalive pings (agent.keepalive) and its agent permits them, so "
            "there is no too_many_pings to avoid"
        ),
        "Keepalive": {
            # gRPC-Go (the original's client) pings no more often than every 10 s, whatever was set.
            "TimeSeconds": Key(("agent", "keepalive", "time_seconds"), floor=10.0),
            "TimeoutSeconds": Key(("agent", "keepalive", "timeout_seconds")),
        },
    },
}

#: Top-level keys of the original provider; any one of them marks a file as legacy.
LEGACY_TOP_LEVEL = (*_LEGACY, "WarmPoolConfig")

_LEGACY_TOP_NAMES: dict[str, None] = dict.fromkeys(LEGACY_TOP_LEVEL)

#: ``WarmPoolConfig`` entry keys (``Name`` is vkec2's own: the original's pools had no names).
_LEGACY_POOL: dict[str, str] = {
    "Name": "name",
    "DesiredCount": "desired_count",
    "IamInstanceProfile": "instance_profile",
    "SecurityGroups": "security_groups",
    "KeyPair": "key_pair",
    "ImageID": "image_id",
    "InstanceType": "instance_type",
    "Subnets": "subnets",
}


def is_legacy(raw: Mapping[str, Any]) -> bool:
    """True when ``raw`` (a parsed file) is the original provider's format: a top-level key is spelled
    exactly as one of its keys. (Only then do keys fold case like Go's decoder: a new-style file's
    typo such as ``clustername`` stays an unknown key rather than turning the file legacy.)"""
    return any(key in LEGACY_TOP_LEVEL for key in raw)


def _lookup(table: Mapping[str, Any], key: str) -> str | None:
    """The table's spelling of ``key``; Go's JSON decoder matches field names case-insensitively."""
    if key in table:
        return key
    return next((name for name in table if name.lower() == key.lower()), None)


class _Mapper:
    """One pass over a legacy file: the new-format data, problems in ``out``, a :class:`Step` per key."""

    def __init__(self, source: str, out: Collector, trail: list[Step] | None) -> None:
        self.source = source
        self.out = out
        self.trail = trail
        self.data: dict[str, Any] = {}
        self.deferred: list[tuple[Key, Any, str]] = []

    def step(self, label: str, value: Any, target: str | None, note: str = "") -> None:
        if self.trail is not None:
            self.trail.append(Step(label, value, target, note))

    def ignore(self, label: str, value: Any, why: str) -> None:
        self.out.warnings.append(f"{self.source}: {label}: ignored: {why}")
        self.step(label, value, None, why)

    def top(self, raw: Mapping[str, Any]) -> None:
        for key, value in raw.items():
            name = _lookup(_LEGACY_TOP_NAMES, key)
            if name == "WarmPoolConfig":
                self.pools(value, key)
            elif name is not None:
                self.entry(_LEGACY[name], value, key)
            elif key in Settings.model_fields:  # a new-style key alongside the legacy ones
                _put(self.data, (key,), value, key, self.source, self.out, register=False)
                self.step(key, value, key, "a vkec2 key, kept as is")
            else:
                known = ", ".join((*LEGACY_TOP_LEVEL, *Settings.model_fields))
                self.out.errors.append(
                    f"{self.source}: {key}: unknown key in an original provider config (no release of "
                    f"the original had it; known: {known})"
                )
        for target, value, label in self.deferred:
            self.weak(target, value, label)
        self.lock_hold()

    def lock_hold(self) -> None:
        """Raise ``celery.lock_max_hold_seconds`` when the file's AWS timeouts need it (v0.5.3's own
        defaults, 30 s + 5 s, do): a pod step must keep its lock through its EC2 calls."""
        aws, celery = self.data.get("aws"), self.data.get("celery", {})
        if not isinstance(aws, dict) or not isinstance(celery, dict) or "lock_max_hold_seconds" in celery:
            return
        try:
            probe = Settings.model_validate({**self.data, "celery": {**celery, "lock_max_hold_seconds": 1e9}})
        except ValidationError:
            return  # the real validation reports the problem
        needed = STEP_EC2_CALLS * probe.ec2_call_worst_seconds()
        default = CelerySettings.model_fields["lock_max_hold_seconds"].default
        if needed <= default:
            return
        label = next(iter(o.label for p, o in self.out.origins.items() if p[:1] == ("aws",)), "aws")
        note = f"celery.lock_max_hold_seconds raised {default:g} -> {needed:g} (one pod step keeps its lock)"
        self.out.warnings.append(f"{self.source}: {label}: {note}")
        path = ("celery", "lock_max_hold_seconds")
        _put(self.data, path, needed, label, self.source, self.out, register=True)
        self.step(label, needed, "celery.lock_max_hold_seconds", note)

    def entry(self, target: Key | _Table, value: Any, label: str) -> None:
        if isinstance(target, dict):
            self.section(target, value, label)
        elif value is None or value == "":  # Go's zero value: the key was not set
            self.step(label, value, None, "not set (Go's zero value)")
        elif target.to is None:
            self.ignore(label, value, target.why)
        elif target.weak:
            self.deferred.append((target, value, label))
        else:
            if target.why:
                self.out.warnings.append(f"{self.source}: {label}: {target.why}")
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if target.floor is not None and number and 0 < value < target.floor:
                why = f"raised from {value:g} to {target.floor:g}, the original's gRPC client's minimum"
                self.out.warnings.append(f"{self.source}: {label}: {why}")
                value = target.floor
            _put(self.data, target.to, value, label, self.source, self.out, register=True)
            self.step(label, value, render(target.to), target.why)

    def weak(self, target: Key, value: Any, label: str) -> None:
        assert target.to is not None
        node: Any = self.data
        for part in target.to:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and node != value:
            other = self.out.origins.get(target.to)
            where = other.label if other else render(target.to)
            self.ignore(label, value, f"{where} sets {render(target.to)} ({node!r})")
            return
        _put(self.data, target.to, value, label, self.source, self.out, register=node is None)
        self.step(label, value, render(target.to))

    def section(self, table: _Table, value: Any, label: str) -> None:
        if value is None:
            self.step(label, value, None, "not set (Go's zero value)")
            return
        if not isinstance(value, dict):
            self.out.errors.append(f"{self.source}: {label}: expected an object, got {kind(value)}")
            return
        for key, item in value.items():
            name = _lookup(table, str(key))
            if name is None:
                known = ", ".join(table)
                self.out.errors.append(
                    f"{self.source}: {label}.{key}: unknown key (no release of the original had it; "
                    f"known: {known})"
                )
                continue
            self.entry(table[name], item, f"{label}.{key}")

    def pools(self, value: Any, label: str) -> None:
        if value is None:
            self.step(label, value, None, "not set (Go's zero value)")
            return
        if not isinstance(value, list):
            self.out.errors.append(f"{self.source}: {label}: expected a list of pools, got {kind(value)}")
            return
        pools: list[dict[str, Any]] = []
        origins = self.out.origins
        origins[("warm_pools",)] = Origin(self.source, label)
        for index, entry in enumerate(value):
            where = f"{label}[{index}]"
            pool: dict[str, Any] = {"name": f"pool-{index}"}
            origins[("warm_pools", index)] = Origin(self.source, where)
            named = Origin(self.source, f"{where} (default name pool-{index})")
            origins[("warm_pools", index, "name")] = named
            if not isinstance(entry, dict):
                self.out.errors.append(f"{self.source}: {where}: expected an object, got {kind(entry)}")
                continue
            if not any(_lookup(_LEGACY_POOL, str(key)) == "Name" for key in entry):
                self.step(f"{where}", None, f"warm_pools[{index}].name", f"named pool-{index}")
            for key, item in entry.items():
                name = _lookup(_LEGACY_POOL, str(key))
                if name is None:
                    known = ", ".join(_LEGACY_POOL)
                    self.out.errors.append(
                        f"{self.source}: {where}.{key}: unknown key (no release of the original had "
                        f"it; known: {known})"
                    )
                    continue
                if item is None or item == "":
                    self.step(f"{where}.{key}", item, None, "not set (Go's zero value)")
                    continue
                pool[_LEGACY_POOL[name]] = item
                origins[("warm_pools", index, _LEGACY_POOL[name])] = Origin(self.source, f"{where}.{key}")
                self.step(f"{where}.{key}", item, f"warm_pools[{index}].{_LEGACY_POOL[name]}")
            pools.append(pool)
        self.data["warm_pools"] = pools


def from_legacy(
    raw: Mapping[str, Any], source: str, out: Collector, trail: list[Step] | None = None
) -> dict[str, Any]:
    """The new-format data for a legacy file; problems go to ``out``, one :class:`Step` per key to
    ``trail`` when given."""
    mapper = _Mapper(source, out, trail)
    mapper.top(raw)
    return mapper.data


def _put(
    data: dict[str, Any],
    path: tuple[str, ...],
    value: Any,
    label: str,
    source: str,
    out: Collector,
    *,
    register: bool,
) -> None:
    """Set ``path`` in ``data``, merging mappings; two different values for one key are an error."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            out.errors.append(f"{source}: {label}: conflicts with {'.'.join(path[:-1])} set elsewhere")
            return
        node = child
    last = path[-1]
    if last in node and isinstance(node[last], dict) and isinstance(value, dict):
        for key, item in value.items():
            _put(data, (*path, str(key)), item, f"{label}.{key}", source, out, register=register)
        return
    if last in node and node[last] != value:
        other = out.origins.get(path)
        where = other.label if other else render(path)
        out.errors.append(
            f"{source}: {label}: conflicts with {where} ({value!r} vs {node[last]!r}); set only one"
        )
        return
    node[last] = value
    if register:
        out.origins[path] = Origin(source, label)
