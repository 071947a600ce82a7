"""The original Go provider's ``config.json``, mapped onto :class:`~vkec2.config.model.Settings`.

A file is legacy when any top-level key is one of the provider's PascalCase keys
(:data:`LEGACY_TOP_LEVEL`). Keys match case-insensitively, like Go's JSON decoder; Go's zero values
(empty string, null) mean "not set"; ``WarmPoolConfig`` entries become ``warm_pools`` named
``pool-N``; new-style keys may stand alongside; a key that no longer applies
(``ManagementSubnet``) is a warning. Every mapped key records its :class:`~vkec2.config.errors.Origin`
so validation errors name the legacy spelling (``WarmPoolConfig[0].DesiredCount``). The table is
documented in docs/configuration.md ("The original provider's config.json").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vkec2.config.errors import Collector, Origin, kind, render
from vkec2.config.model import Settings

#: Top-level keys of the original provider; any one of them marks a file as legacy.
LEGACY_TOP_LEVEL = (
    "ClusterName", "Region", "ManagementSubnet", "AWSClientTimeoutSeconds",
    "AWSClientDialerTimeoutSeconds", "StatusIntervalSeconds", "VMConfig", "BootstrapAgent",
    "HealthConfig", "VKVMAgentConnectionConfig", "WarmPoolConfig",
)  # fmt: skip

_Table = dict[str, "tuple[str, ...] | _Table | None"]

#: Legacy key -> new path (a tuple), nested section (a dict) or None (accepted, no longer applies).
_LEGACY: _Table = {
    "ClusterName": ("cluster_name",),
    "Region": ("region",),
    "ManagementSubnet": None,
    "AWSClientTimeoutSeconds": ("aws", "read_timeout_seconds"),
    "AWSClientDialerTimeoutSeconds": ("aws", "connect_timeout_seconds"),
    "StatusIntervalSeconds": ("status_interval_seconds",),
    "VMConfig": {"DefaultAMI": ("ec2", "image_id"), "InitData": ("ec2", "user_data")},
    "BootstrapAgent": {
        "S3Bucket": ("bootstrap", "s3_bucket"),
        "S3Key": ("bootstrap", "s3_key"),
        "InitData": ("bootstrap", "init_data"),
        "GRPCPort": ("agent", "port"),
    },
    "HealthConfig": {
        "UnhealthyThresholdCount": ("health", "unhealthy_threshold"),
        # The Go provider documented UnhealthyMaxCount as "maximum failure results before forcing
        # the provider to take action" (and never used it). The nearest vkec2 notion is the count
        # of failed checks after which the pod is given up on as Unknown.
        "UnhealthyMaxCount": ("health", "unknown_threshold"),
        "HealthCheckIntervalSeconds": ("health", "interval_seconds"),
    },
    "VKVMAgentConnectionConfig": {
        "Port": ("agent", "port"),
        "TimeoutSeconds": ("agent", "call_timeout_seconds"),
        "MinConnectTimeoutSeconds": ("agent", "connect_timeout_seconds"),
        "HealthCheckIntervalSeconds": ("health", "interval_seconds"),
        "Backoff": {
            "BaseDelaySeconds": ("agent", "backoff", "base_delay_seconds"),
            "Multiplier": ("agent", "backoff", "multiplier"),
            "Jitter": ("agent", "backoff", "jitter"),
            "MaxDelaySeconds": ("agent", "backoff", "max_delay_seconds"),
        },
        "Keepalive": {
            "TimeSeconds": ("agent", "keepalive", "time_seconds"),
            "TimeoutSeconds": ("agent", "keepalive", "timeout_seconds"),
        },
    },
}

_LEGACY_TOP_NAMES: dict[str, None] = dict.fromkeys(LEGACY_TOP_LEVEL)

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

_NO_LONGER_APPLIES = {
    "ManagementSubnet": "no longer needed (the producer's pod IP is the node IP); ignored",
}


def is_legacy(raw: Mapping[str, Any]) -> bool:
    """True when ``raw`` (a parsed file) is the original provider's format."""
    return any(key in LEGACY_TOP_LEVEL for key in raw)


def _lookup(table: Mapping[str, Any], key: str) -> str | None:
    """The table's spelling of ``key``; Go's JSON decoder matches field names case-insensitively."""
    if key in table:
        return key
    return next((name for name in table if name.lower() == key.lower()), None)


def from_legacy(raw: Mapping[str, Any], source: str, out: Collector) -> dict[str, Any]:
    """The new-format data for a legacy file; problems go to ``out``."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = _lookup(_LEGACY_TOP_NAMES, key)
        if name == "WarmPoolConfig":
            _legacy_pools(value, key, source, data, out)
        elif name is not None:
            _legacy_entry(_LEGACY[name], value, key, source, data, out)
        elif key in Settings.model_fields:  # a new-style key alongside the legacy ones
            _put(data, (key,), value, f"{key}", source, out, register=False)
        else:
            known = ", ".join((*LEGACY_TOP_LEVEL, *Settings.model_fields))
            out.errors.append(f"{source}: {key}: unknown key in an original provider config (known: {known})")
    return data


def _legacy_entry(
    target: tuple[str, ...] | _Table | None,
    value: Any,
    label: str,
    source: str,
    data: dict[str, Any],
    out: Collector,
) -> None:
    if target is None:
        out.warnings.append(f"{source}: {label}: {_NO_LONGER_APPLIES.get(label.split('.')[-1], 'ignored')}")
        return
    if value is None or value == "":  # Go's zero value: the key was not set
        return
    if isinstance(target, tuple):
        _put(data, target, value, label, source, out, register=True)
        return
    if not isinstance(value, dict):
        out.errors.append(f"{source}: {label}: expected an object, got {kind(value)}")
        return
    for key, item in value.items():
        name = _lookup(target, str(key))
        if name is None:
            known = ", ".join(target)
            out.errors.append(f"{source}: {label}.{key}: unknown key (known: {known})")
            continue
        _legacy_entry(target[name], item, f"{label}.{key}", source, data, out)


def _legacy_pools(value: Any, label: str, source: str, data: dict[str, Any], out: Collector) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        out.errors.append(f"{source}: {label}: expected a list of pools, got {kind(value)}")
        return
    pools: list[dict[str, Any]] = []
    out.origins[("warm_pools",)] = Origin(source, label)
    for index, entry in enumerate(value):
        where = f"{label}[{index}]"
        pool: dict[str, Any] = {"name": f"pool-{index}"}
        out.origins[("warm_pools", index)] = Origin(source, where)
        out.origins[("warm_pools", index, "name")] = Origin(source, f"{where} (default name pool-{index})")
        if not isinstance(entry, dict):
            out.errors.append(f"{source}: {where}: expected an object, got {kind(entry)}")
            continue
        for key, item in entry.items():
            name = _lookup(_LEGACY_POOL, str(key))
            if name is None:
                known = ", ".join(_LEGACY_POOL)
                out.errors.append(f"{source}: {where}.{key}: unknown key (known: {known})")
                continue
            if item is None or item == "":
                continue
            pool[_LEGACY_POOL[name]] = item
            out.origins[("warm_pools", index, _LEGACY_POOL[name])] = Origin(source, f"{where}.{key}")
        pools.append(pool)
    data["warm_pools"] = pools


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
