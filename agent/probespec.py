"""A container's probes as the agent reads them: liveness, readiness and startup specs parsed and checked.

:func:`parse_probe` turns one ``livenessProbe``/``readinessProbe``/``startupProbe`` of the pod JSON
into a :class:`ProbeSpec` with the kubelet's defaults filled in (period 10 s, timeout 1 s, failure
threshold 3 ...), refusing a bad one with ``INVALID_ARGUMENT`` naming its field;
:func:`container_ports` names the container's ports, so an ``httpGet``/``tcpSocket`` port may be
given by name. :mod:`agent.podspec` calls these for every container; :mod:`agent.probes` runs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.model import InvalidArgument


def str_list(value: Any, where: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings (None: empty), else INVALID_ARGUMENT naming ``where``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where} must be a list of strings")
    return tuple(value)


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
        command = str_list(body.get("command"), f"{hwhere}.command")
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
