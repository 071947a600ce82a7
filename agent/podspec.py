"""The pod spec as the agent reads it: Kubernetes pod JSON parsed and checked, and container environments.

Both runtimes (process and simulated) parse the pod JSON handed to LaunchApplication into a
:class:`PodSpec` here, so they accept and refuse the same pods (``INVALID_ARGUMENT`` with what was
wrong). :func:`container_environment` builds a container's environment the way the kubelet does:
literal values with ``$(VAR)`` expansion (``$$`` escapes) and ``valueFrom.fieldRef`` on the pod's
metadata, spec and IPs; ``secretKeyRef``, ``configMapKeyRef`` and ``envFrom`` take the values the
producer resolved, which LaunchApplication carries next to the pod (``resolved_json``, merged into the
pod object under :data:`RESOLVED_KEY` by :func:`merge_resolved`); a reference without a resolved value
was optional and missing, so the variable is left out, as the kubelet does. Volumes: configMap,
secret, downwardAPI and projected volumes get the resolved files (:mod:`agent.volumes`), emptyDir is a
directory, every other type is refused naming the volume and its type; ``volumeMounts`` must name a
volume and an absolute ``mountPath``; ``subPath`` is honoured, ``subPathExpr`` refused. A
container's liveness, readiness and startup probes are parsed and checked here too
(:class:`ProbeSpec`; a bad one is refused naming its field); :mod:`agent.probes` runs them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.model import InvalidArgument
from agent.probespec import PROBE_KINDS, ProbeSpec, container_ports, parse_probe, str_list
from agent.volumes import Mount, VolumeFile, parse_files

RESTART_POLICIES = ("Always", "OnFailure", "Never")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_FIELD_SUBSCRIPT_RE = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
#: Where :func:`merge_resolved` puts the producer's resolved content inside the pod object.
RESOLVED_KEY = "vkec2Resolved"
CONTENT_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    field_path: str | None = None
    literal: bool = False  # a resolved secretKeyRef/configMapKeyRef value: never $(VAR)-expanded


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    working_dir: str | None
    liveness: ProbeSpec | None = None
    readiness: ProbeSpec | None = None
    startup: ProbeSpec | None = None
    env_from: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()

    @property
    def argv(self) -> list[str]:
        """What to execute: ``command + args`` (without an image, ``args`` alone is the command)."""
        return [*self.command, *self.args]


@dataclass(frozen=True)
class PodSpec:
    uid: str
    name: str
    namespace: str
    restart_policy: str
    init_containers: tuple[ContainerSpec, ...]
    containers: tuple[ContainerSpec, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""
    service_account: str = ""
    termination_grace: float = 30.0
    empty_dirs: tuple[str, ...] = ()
    volume_files: Mapping[str, tuple[VolumeFile, ...]] = field(default_factory=dict)

    @property
    def has_volumes(self) -> bool:
        return bool(self.empty_dirs or self.volume_files)

    def find(self, name: str) -> ContainerSpec | None:
        for c in (*self.containers, *self.init_containers):
            if c.name == name:
                return c
        return None

    def container_names(self) -> list[str]:
        return [c.name for c in self.containers]

    def field_value(self, path: str, pod_ip: str, host_ip: str) -> str:
        """The value of a ``valueFrom.fieldRef.fieldPath`` (validated at parse time)."""
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "status.podIP": pod_ip,
            "status.podIPs": pod_ip,
            "status.hostIP": host_ip,
            "status.hostIPs": host_ip,
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": self.service_account,
        }
        if path in simple:
            return simple[path]
        m = _FIELD_SUBSCRIPT_RE.match(path)
        assert m is not None, path
        source = self.labels if m.group(1) == "labels" else self.annotations
        return source.get(m.group(2), "")


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{where} must be a map of strings")
    return {str(k): v for k, v in value.items()}


def _valid_field_path(path: str) -> bool:
    return (
        path
        in {
            "metadata.name",
            "metadata.namespace",
            "metadata.uid",
            "status.podIP",
            "status.podIPs",
            "status.hostIP",
            "status.hostIPs",
            "spec.nodeName",
            "spec.serviceAccountName",
        }
        or _FIELD_SUBSCRIPT_RE.match(path) is not None
    )


def _parse_container(
    raw: Any,
    where: str,
    resolved: Mapping[str, Any] | None = None,
    volumes: frozenset[str] = frozenset(),
    init: bool = False,
) -> ContainerSpec:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where} must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 63:
        raise InvalidArgument(
            f"{where}.name must be a DNS label (lowercase letters, digits, '-'), got {name!r}"
        )
    where = f"{where}[{name}]"
    image = raw.get("image", "")
    if not isinstance(image, str):
        raise InvalidArgument(f"{where}.image must be a string")
    command = str_list(raw.get("command"), f"{where}.command")
    args = str_list(raw.get("args"), f"{where}.args")
    env: list[EnvVar] = []
    raw_env = raw.get("env") or []
    if not isinstance(raw_env, list):
        raise InvalidArgument(f"{where}.env must be a list")
    for i, item in enumerate(raw_env):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidArgument(f"{where}.env[{i}] must be an object with a non-empty name")
        ename = item["name"]
        if "valueFrom" in item and item["valueFrom"] is not None:
            vf = item["valueFrom"]
            if isinstance(vf, dict) and (vf.get("secretKeyRef") or vf.get("configMapKeyRef")):
                values = (resolved or {}).get("env") or {}
                if ename in values:
                    env.append(EnvVar(ename, value=str(values[ename]), literal=True))
                    continue
                ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                if not (isinstance(ref, dict) and ref.get("optional")):
                    raise InvalidArgument(
                        f"{where}.env[{ename}].valueFrom: the reference was not resolved "
                        "(the producer resolves secretKeyRef/configMapKeyRef before launch)"
                    )
                continue  # an optional reference whose object or key is missing: left out
            ref = vf.get("fieldRef") if isinstance(vf, dict) else None
            path = ref.get("fieldPath") if isinstance(ref, dict) else None
            if not isinstance(path, str):
                raise InvalidArgument(
                    f"{where}.env[{ename}].valueFrom: only fieldRef is supported by the agent "
                    "(resolve secretKeyRef/configMapKeyRef/resourceFieldRef before launch)"
                )
            if not _valid_field_path(path):
                raise InvalidArgument(
                    f"{where}.env[{ename}].valueFrom.fieldRef.fieldPath {path!r} is not supported"
                )
            env.append(EnvVar(ename, field_path=path))
        else:
            value = item.get("value", "")
            if not isinstance(value, str):
                raise InvalidArgument(f"{where}.env[{ename}].value must be a string")
            env.append(EnvVar(ename, value=value))
    env_from: list[tuple[str, str]] = []
    for pair in (resolved or {}).get("envFrom") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise InvalidArgument(f"{where}: resolved envFrom must be [name, value] pairs")
        env_from.append((pair[0], pair[1]))
    mounts = _parse_mounts(raw.get("volumeMounts"), where, volumes)
    working_dir = raw.get("workingDir")
    if working_dir is not None and not isinstance(working_dir, str):
        raise InvalidArgument(f"{where}.workingDir must be a string")
    probes: dict[str, ProbeSpec | None] = {}
    ports = container_ports(raw.get("ports"), f"{where}.ports")
    for kind in PROBE_KINDS:
        key = f"{kind.lower()}Probe"
        value = raw.get(key)
        if value is not None and init:
            raise InvalidArgument(f"{where}.{key}: init containers may not have probes")
        probes[kind] = None if value is None else parse_probe(value, kind, f"{where}.{key}", ports)
    return ContainerSpec(
        name,
        image,
        command,
        args,
        tuple(env),
        working_dir or None,
        liveness=probes["Liveness"],
        readiness=probes["Readiness"],
        startup=probes["Startup"],
        env_from=tuple(env_from),
        mounts=mounts,
    )


def _parse_mounts(raw: Any, where: str, volumes: frozenset[str]) -> tuple[Mount, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where}.volumeMounts must be a list")
    out: list[Mount] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidArgument(f"{where}.volumeMounts[{i}] must be an object")
        name, path = m.get("name"), m.get("mountPath")
        if name not in volumes:
            raise InvalidArgument(f"{where}.volumeMounts[{i}] names no volume of the pod: {name!r}")
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
            raise InvalidArgument(
                f"{where}.volumeMounts[{i}].mountPath must be an absolute path without '..'"
            )
        if m.get("subPathExpr"):
            raise InvalidArgument(f"{where}.volumeMounts[{i}].subPathExpr is not supported by the agent")
        sub = m.get("subPath") or ""
        if not isinstance(sub, str) or sub.startswith("/") or ".." in sub.split("/"):
            raise InvalidArgument(f"{where}.volumeMounts[{i}].subPath must be a relative path without '..'")
        out.append(Mount(str(name), path, sub, bool(m.get("readOnly"))))
    return tuple(out)


def _parse_volumes(
    raw: Any, resolved: Mapping[str, Any]
) -> tuple[tuple[str, ...], dict[str, tuple[VolumeFile, ...]]]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise InvalidArgument("spec.volumes must be a list")
    empty: list[str] = []
    files: dict[str, tuple[VolumeFile, ...]] = {}
    for i, vol in enumerate(raw):
        if (
            not isinstance(vol, dict)
            or not isinstance(vol.get("name"), str)
            or not _NAME_RE.match(vol["name"])
        ):
            raise InvalidArgument(f"spec.volumes[{i}] must be an object with a DNS-label name")
        name = vol["name"]
        kinds = [k for k in vol if k != "name"]
        if name in empty or name in files:
            raise InvalidArgument(f"volume name {name!r} is used twice")
        if kinds == ["emptyDir"]:
            empty.append(name)
        elif len(kinds) == 1 and kinds[0] in CONTENT_VOLUMES:
            files[name] = parse_files((resolved.get("volumes") or {}).get(name, []), f"volume {name!r}")
        else:
            kind = ", ".join(kinds) or "none"
            raise InvalidArgument(
                f"volume {name!r} has type {kind}, which vkec2 does not support (supported: "
                f"emptyDir, {', '.join(CONTENT_VOLUMES)})"
            )
    return tuple(empty), files


def merge_resolved(pod_json: str, resolved_json: str) -> str:
    """The pod JSON with the resolved content under :data:`RESOLVED_KEY` (as the runtimes read it)."""
    if not resolved_json:
        return pod_json
    try:
        pod, resolved = json.loads(pod_json), json.loads(resolved_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"pod_json or resolved_json is not valid JSON: {exc}") from None
    if not isinstance(pod, dict) or not isinstance(resolved, dict):
        raise InvalidArgument("pod_json and resolved_json must be JSON objects")
    return json.dumps({**pod, RESOLVED_KEY: resolved})


def parse_pod(pod_json: str) -> PodSpec:
    """Parse and validate the pod JSON a LaunchApplication carries; refuse it with a clear message."""
    try:
        raw = json.loads(pod_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"pod_json is not valid JSON: {exc}") from None
    return parse_pod_object(raw)


def parse_pod_object(raw: Any) -> PodSpec:
    if not isinstance(raw, dict):
        raise InvalidArgument("pod_json must be a JSON object (a Kubernetes Pod)")
    kind = raw.get("kind", "Pod")
    if kind != "Pod":
        raise InvalidArgument(f"pod_json has kind {kind!r}, expected 'Pod'")
    meta = raw.get("metadata") or {}
    spec = raw.get("spec")
    if not isinstance(meta, dict):
        raise InvalidArgument("pod metadata must be an object")
    if not isinstance(spec, dict):
        raise InvalidArgument("pod spec is missing or not an object")
    name = meta.get("name") or ""
    namespace = meta.get("namespace") or "default"
    uid = meta.get("uid") or ""
    for key, val in (("name", name), ("namespace", namespace), ("uid", uid)):
        if not isinstance(val, str):
            raise InvalidArgument(f"metadata.{key} must be a string")
    if not name:
        raise InvalidArgument("metadata.name is required")
    policy = spec.get("restartPolicy") or "Always"
    if policy not in RESTART_POLICIES:
        raise InvalidArgument(
            f"spec.restartPolicy must be one of {', '.join(RESTART_POLICIES)}, got {policy!r}"
        )
    raw_containers = spec.get("containers")
    if not isinstance(raw_containers, list) or not raw_containers:
        raise InvalidArgument("spec.containers must be a non-empty list")
    raw_inits = spec.get("initContainers") or []
    if not isinstance(raw_inits, list):
        raise InvalidArgument("spec.initContainers must be a list")
    resolved = raw.get(RESOLVED_KEY) or {}
    if not isinstance(resolved, dict):
        raise InvalidArgument("the resolved content must be an object")
    for key in ("containers", "volumes"):
        if not isinstance(resolved.get(key) or {}, dict):
            raise InvalidArgument(f"the resolved content's {key} must be an object")
    empty_dirs, volume_files = _parse_volumes(spec.get("volumes"), resolved)
    names = frozenset([*empty_dirs, *volume_files])
    per_container = resolved.get("containers") or {}

    def parse(c: Any, where: str, init: bool = False) -> ContainerSpec:
        own = per_container.get(c.get("name")) if isinstance(c, dict) else None
        return _parse_container(c, where, own if isinstance(own, dict) else None, names, init)

    inits = tuple(parse(c, f"spec.initContainers[{i}]", True) for i, c in enumerate(raw_inits))
    containers = tuple(parse(c, f"spec.containers[{i}]") for i, c in enumerate(raw_containers))
    seen: set[str] = set()
    for c in (*inits, *containers):
        if c.name in seen:
            raise InvalidArgument(f"container name {c.name!r} is used twice")
        seen.add(c.name)
    node_name = spec.get("nodeName") or ""
    sa = spec.get("serviceAccountName") or ""
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is None:
        grace = 30
    # A number, as the fleet passes it on (a huge one is the fleet's to cap: agent.max_grace_seconds).
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace < math.inf:
        raise InvalidArgument(f"spec.terminationGracePeriodSeconds must be a number >= 0, got {grace!r}")
    return PodSpec(
        uid=uid or f"{namespace}/{name}",
        name=name,
        namespace=namespace,
        restart_policy=policy,
        init_containers=inits,
        containers=containers,
        labels=_str_map(meta.get("labels"), "metadata.labels"),
        annotations=_str_map(meta.get("annotations"), "metadata.annotations"),
        node_name=node_name if isinstance(node_name, str) else "",
        service_account=sa if isinstance(sa, str) else "",
        termination_grace=float(grace),
        empty_dirs=empty_dirs,
        volume_files=volume_files,
    )


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, others stay."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_RE.sub(repl, text)


def container_environment(
    pod: PodSpec, c: ContainerSpec, *, pod_ip: str, host_ip: str, base: Mapping[str, str]
) -> dict[str, str]:
    """The environment a container's process gets: ``base``, then envFrom, then the spec's env, in order."""
    result = dict(base)
    declared: dict[str, str] = dict(c.env_from)
    for var in c.env:
        if var.field_path is not None:
            value = pod.field_value(var.field_path, pod_ip, host_ip)
        elif var.literal:
            value = var.value or ""
        else:
            value = expand_vars(var.value or "", declared)
        declared[var.name] = value
    result.update(declared)
    return result
