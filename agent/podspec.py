"""The pod spec as the agent reads it: Kubernetes pod JSON parsed and checked, and container environments.

Both runtimes (process and simulated) parse the pod JSON handed to LaunchApplication into a
:class:`PodSpec` here, so they accept and refuse the same pods (``INVALID_ARGUMENT`` with what was
wrong). :func:`container_environment` builds a container's environment the way the kubelet does:
literal values with ``$(VAR)`` expansion (``$$`` escapes) and ``valueFrom.fieldRef`` on the pod's
metadata, spec and IPs; ``secretKeyRef``, ``configMapKeyRef`` and ``envFrom`` are refused. A
container's liveness, readiness and startup probes are parsed and checked here too
(:class:`ProbeSpec`; a bad one is refused naming its field); :mod:`agent.probes` runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.model import InvalidArgument

RESTART_POLICIES = ("Always", "OnFailure", "Never")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_FIELD_SUBSCRIPT_RE = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    field_path: str | None = None


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


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where} must be a list of strings")
    return tuple(value)


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{where} must be a map of strings")
    return {str(k): v for k, v in value.items()}


PROBE_KINDS = ("Liveness", "Readiness", "Startup")
_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a container, validated, with the kubelet's defaults filled in."""

    kind: str  # Liveness | Readiness | Startup
    handler: str  # exec | httpGet | tcpSocket | grpc
    command: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    scheme: str = "HTTP"
    path: str = "/"
    port: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    service: str = ""
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None


def container_ports(raw: Any, where: str) -> dict[str, int]:
    """Named container ports (``ports[].name`` -> ``containerPort``), for probes that name a port."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where} must be a list")
    named: dict[str, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where}[{i}] must be an object")
        number, name = item.get("containerPort"), item.get("name")
        if isinstance(name, str) and name and isinstance(number, int) and not isinstance(number, bool):
            named[name] = number
    return named


def _int_field(raw: dict[str, Any], key: str, where: str, default: int, low: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgument(f"{where}.{key} must be an integer >= {low}, got {value!r}")
    return value


def _probe_port(value: Any, where: str, ports: Mapping[str, int], by_name: bool) -> int:
    if isinstance(value, str) and by_name:
        if value.isdigit():
            value = int(value)
        elif value in ports:
            value = ports[value]
        else:
            raise InvalidArgument(f"{where}.port names no port of the container: {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidArgument(f"{where}.port must be a port number 1-65535, got {value!r}")
    return value


def parse_probe(raw: Any, kind: str, where: str, ports: Mapping[str, int]) -> ProbeSpec:
    """A container's liveness, readiness or startup probe, checked as the API server checks it."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where} must be an object")
    handlers = [h for h in _HANDLERS if raw.get(h) is not None]
    if len(handlers) != 1:
        raise InvalidArgument(
            f"{where} must specify exactly one handler of {', '.join(_HANDLERS)}, got {len(handlers)}"
        )
    handler = handlers[0]
    body = raw[handler]
    hwhere = f"{where}.{handler}"
    if not isinstance(body, dict):
        raise InvalidArgument(f"{hwhere} must be an object")
    values: dict[str, Any] = {}
    if handler == "exec":
        command = _str_list(body.get("command"), f"{hwhere}.command")
        if not command:
            raise InvalidArgument(f"{hwhere}.command must be a non-empty list of strings")
        values["command"] = command
    else:
        values["port"] = _probe_port(body.get("port"), hwhere, ports, handler != "grpc")
        host = body.get("host") or "127.0.0.1"
        if handler != "grpc":
            if not isinstance(host, str):
                raise InvalidArgument(f"{hwhere}.host must be a string")
            values["host"] = host
    if handler == "httpGet":
        scheme = body.get("scheme") or "HTTP"
        if scheme not in ("HTTP", "HTTPS"):
            raise InvalidArgument(f"{hwhere}.scheme must be HTTP or HTTPS, got {scheme!r}")
        path = body.get("path") or "/"
        if not isinstance(path, str):
            raise InvalidArgument(f"{hwhere}.path must be a string")
        headers = []
        for i, h in enumerate(body.get("httpHeaders") or []):
            if not (
                isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value", ""), str)
            ):
                raise InvalidArgument(f"{hwhere}.httpHeaders[{i}] must be an object with a name and a value")
            if not _HEADER_RE.match(h["name"]):
                raise InvalidArgument(
                    f"{hwhere}.httpHeaders[{i}].name {h['name']!r} is not a valid header name"
                )
            headers.append((h["name"], str(h.get("value", ""))))
        values.update(
            scheme=scheme, path=path if path.startswith("/") else f"/{path}", headers=tuple(headers)
        )
    if handler == "grpc":
        service = body.get("service") or ""
        if not isinstance(service, str):
            raise InvalidArgument(f"{hwhere}.service must be a string")
        values["service"] = service
    success = _int_field(raw, "successThreshold", where, 1, 1)
    if kind != "Readiness" and success != 1:
        raise InvalidArgument(f"{where}.successThreshold must be 1 for a {kind.lower()} probe, got {success}")
    grace = raw.get("terminationGracePeriodSeconds")
    if grace is not None:
        if kind == "Readiness":
            raise InvalidArgument(
                f"{where}.terminationGracePeriodSeconds is not allowed on a readiness probe"
            )
        grace = _int_field(raw, "terminationGracePeriodSeconds", where, 0, 1)
    return ProbeSpec(
        kind=kind,
        handler=handler,
        initial_delay=float(_int_field(raw, "initialDelaySeconds", where, 0, 0)),
        period=float(_int_field(raw, "periodSeconds", where, 10, 1)),
        timeout=float(_int_field(raw, "timeoutSeconds", where, 1, 1)),
        success_threshold=success,
        failure_threshold=_int_field(raw, "failureThreshold", where, 3, 1),
        termination_grace=None if grace is None else float(grace),
        **values,
    )


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


def _parse_container(raw: Any, where: str, init: bool = False) -> ContainerSpec:
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
    command = _str_list(raw.get("command"), f"{where}.command")
    args = _str_list(raw.get("args"), f"{where}.args")
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
    if raw.get("envFrom"):
        raise InvalidArgument(f"{where}.envFrom is not supported by the agent (inline the values as env)")
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
        probes["Liveness"],
        probes["Readiness"],
        probes["Startup"],
    )


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
    inits = tuple(_parse_container(c, f"spec.initContainers[{i}]", True) for i, c in enumerate(raw_inits))
    containers = tuple(_parse_container(c, f"spec.containers[{i}]") for i, c in enumerate(raw_containers))
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
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
        raise InvalidArgument(f"spec.terminationGracePeriodSeconds must be an integer >= 0, got {grace!r}")
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
    """The environment a container's process gets: ``base`` plus the spec's env, in order."""
    result = dict(base)
    declared: dict[str, str] = {}
    for var in c.env:
        if var.field_path is not None:
            value = pod.field_value(var.field_path, pod_ip, host_ip)
        else:
            value = expand_vars(var.value or "", declared)
        declared[var.name] = value
    result.update(declared)
    return result
