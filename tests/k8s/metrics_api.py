"""The resource metrics API (``metrics.k8s.io/v1beta1``) for the API double, as metrics-server serves it.

A test sets :attr:`MetricsApi.pods` to the per-container usage a metrics-server stand-in computed
(:mod:`tests.support.metrics_client`), and the double then answers what ``kubectl top pod`` asks:
the group in ``/apis`` discovery, ``/apis/metrics.k8s.io[/v1beta1]`` and the ``PodMetrics`` list or
item of a namespace (or of all namespaces). Quantities are rendered as metrics-server renders them
(CPU in ``n`` nanocores, memory in ``Ki``). Not modelled: ``NodeMetrics`` values (the list is
empty), label selectors, watches.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"

#: (namespace, pod) -> container -> (CPU millicores, memory bytes)
PodUsage = dict[tuple[str, str], dict[str, tuple[float, float]]]


def api_group() -> dict[str, Any]:
    """The group as ``/apis`` lists it."""
    gv = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [gv], "preferredVersion": gv}


def _resources() -> dict[str, Any]:
    def entry(plural: str, kind: str, namespaced: bool) -> dict[str, Any]:
        return {
            "name": plural,
            "singularName": "",
            "namespaced": namespaced,
            "kind": kind,
            "verbs": ["get", "list"],
        }

    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [entry("pods", "PodMetrics", True), entry("nodes", "NodeMetrics", False)],
    }


class MetricsApi:
    """What the double serves under ``/apis/metrics.k8s.io``; ``pods`` is set by the test."""

    def __init__(self) -> None:
        self.pods: PodUsage = {}
        self.window = "15s"

    @staticmethod
    def api_group() -> dict[str, Any]:
        return api_group()

    def _pod(self, namespace: str, name: str, containers: dict[str, tuple[float, float]]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now},
            "timestamp": now,
            "window": self.window,
            "containers": [
                {"name": c, "usage": {"cpu": f"{round(cpu * 1e6)}n", "memory": f"{int(mem) // 1024}Ki"}}
                for c, (cpu, mem) in sorted(containers.items())
            ],
        }

    def handle(self, h: BaseHTTPRequestHandler, method: str, path: str) -> bool:
        """Answer a GET under ``/apis/metrics.k8s.io`` (True), else leave it to the double (False)."""
        parts = [p for p in path.split("/") if p]
        if method != "GET" or parts[:2] != ["apis", GROUP]:
            return False
        rest = parts[2:]
        if not rest:
            self._reply(h, 200, api_group())
        elif rest == [VERSION]:
            self._reply(h, 200, _resources())
        elif rest in ([VERSION, "pods"], [VERSION, "nodes"]) or (
            len(rest) == 4 and rest[:2] == [VERSION, "namespaces"] and rest[3] == "pods"
        ):
            namespace = rest[2] if len(rest) == 4 else None
            kind = "NodeMetricsList" if rest[-1] == "nodes" else "PodMetricsList"
            items = [
                self._pod(ns, name, cs)
                for (ns, name), cs in sorted(self.pods.items())
                if kind == "PodMetricsList" and (namespace is None or ns == namespace)
            ]
            self._reply(h, 200, {"kind": kind, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items})
        elif len(rest) == 5 and rest[:2] == [VERSION, "namespaces"] and rest[3] == "pods":
            found = self.pods.get((rest[2], rest[4]))
            if found is None:
                message = f'podmetrics.metrics.k8s.io "{rest[4]}" not found'
                body = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": message,
                    "reason": "NotFound",
                    "code": 404,
                }
                self._reply(h, 404, body)
            else:
                self._reply(
                    h,
                    200,
                    {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, **self._pod(rest[2], rest[4], found)},
                )
        else:
            return False
        return True

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
