"""Kubernetes access for the producer: client construction and the few typed calls it makes.

The producer is the only part of vkec2 that talks to Kubernetes. This module builds the official
``kubernetes`` client in one of three ways — in-cluster (service account), from a kubeconfig, or
against an explicit plain-HTTP host (tests and the API server double) — and wraps the handful of
REST calls the producer needs (pods, pods/status, events, nodes, nodes/status, leases, its own
StatefulSet, read at shutdown to tell a scale-down from a restart, and — one GET per name its pods
reference, never a list or watch — ConfigMaps, Secrets and service account tokens; ``vkec2 bench``
also creates, lists, watches and deletes its pods by label here) so that the
rest of the package works on plain JSON dicts and one exception type, :class:`KubeError`, that
carries the HTTP status. Watches are read line by line from the raw response so a 410 Gone (as an
HTTP status or as a watch ``ERROR`` event) surfaces as ``KubeError(410)`` for the caller to relist.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Obj = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
REQUEST_TIMEOUT = (5.0, 30.0)


class KubeError(Exception):
    """A failed Kubernetes API call; ``status`` is the HTTP code (0 when the server was unreachable)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True)
class KubeTarget:
    """How to reach the API server: exactly one of in_cluster, kubeconfig or host (None: auto)."""

    in_cluster: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    host: str | None = None


def build_api_client(target: KubeTarget) -> Any:
    """An official ``ApiClient`` for ``target``.

    With nothing chosen: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else the default
    kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).
    """
    cfg = k8s.Configuration()
    if target.host:
        cfg.host = target.host.rstrip("/")
    elif target.in_cluster:
        k8s_config.load_incluster_config(client_configuration=cfg)
    elif target.kubeconfig:
        k8s_config.load_kube_config(
            config_file=target.kubeconfig, context=target.context, client_configuration=cfg
        )
    else:
        import os

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            k8s_config.load_kube_config(context=target.context, client_configuration=cfg)
    return k8s.ApiClient(cfg)


def _error(exc: Exception) -> KubeError:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason, message = str(exc.reason or ""), str(exc.body or "")
        try:
            body = json.loads(exc.body or "")
            reason = str(body.get("reason") or reason)
            message = str(body.get("message") or message)
        except (ValueError, AttributeError):
            pass
        return KubeError(status, reason, message)
    return KubeError(0, type(exc).__name__, str(exc))


def _on_node(node: str | None) -> str | None:
    """The field selector of the pods bound to ``node`` (None: no selector)."""
    return f"spec.nodeName={node}" if node else None


def _json(resp: Any) -> Obj:
    data = resp.data
    return dict(json.loads(data)) if data else {}


class Kube:
    """The producer's calls, on JSON dicts. Every method raises :class:`KubeError` on failure."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.coord = k8s.CoordinationV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self._watches: set[Any] = set()
        self._watch_lock = threading.Lock()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return _json(fn(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            raise _error(exc) from exc
        except Exception as exc:  # urllib3 connection errors and the like
            raise _error(exc) from exc

    def close(self) -> None:
        self.abort_watches()
        self.api_client.close()

    def abort_watches(self) -> None:
        """End every open watch now (at shutdown), unblocking the threads reading them."""
        with self._watch_lock:
            open_ = list(self._watches)
        for resp in open_:
            try:
                shutdown = getattr(resp, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                else:
                    resp.close()
            except Exception as exc:
                log.debug("closing a watch: %s", exc)

    # -- pods -----------------------------------------------------------------------------------

    def get_pod(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._call(self.core.read_namespaced_pod, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        """One call of the client's ``fn`` with this client's timeout and errors, for tools that drive
        the API server themselves (``vkec2 bench launch`` creates pods; the producer never does, and its
        RBAC does not allow it)."""
        return self._call(fn, *args, **kwargs)

    def list_pods(self, node: str | None, label_selector: str | None = None) -> tuple[list[Obj], str]:
        """Every pod bound to ``node`` (None: of any node) and matching ``label_selector`` (all pages),
        and the list's resourceVersion."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"field_selector": _on_node(node), "limit": 500}
            if label_selector:
                kwargs["label_selector"] = label_selector
            if token:
                kwargs["_continue"] = token
            page = self._call(self.core.list_pod_for_all_namespaces, **kwargs)
            for item in page.get("items") or []:
                item.setdefault("kind", "Pod")
                item.setdefault("apiVersion", "v1")
                items.append(item)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    def watch_pods(
        self, node: str | None, resource_version: str, timeout_seconds: int, label_selector: str | None = None
    ) -> Iterator[tuple[str, Obj]]:
        """Watch events (type, object) for ``node``'s pods (None: any node's) matching ``label_selector``
        after ``resource_version``.

        Ends when the server closes the stream; raises ``KubeError(410)`` when the version expired.
        """
        try:
            resp = self.core.list_pod_for_all_namespaces(
                watch=True,
                field_selector=_on_node(node),
                label_selector=label_selector or None,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(5.0, timeout_seconds + 15.0),
            )
        except Exception as exc:
            raise _error(exc) from exc
        with self._watch_lock:
            self._watches.add(resp)
        try:
            for line in iter_resp_lines(resp):
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = str(event.get("type", "")), event.get("object") or {}
                if kind == "ERROR":
                    raise KubeError(
                        int(obj.get("code") or 500), str(obj.get("reason", "")), str(obj.get("message", ""))
                    )
                yield kind, obj
        except KubeError:
            raise
        except Exception as exc:
            raise _error(exc) from exc
        finally:
            with self._watch_lock:
                self._watches.discard(resp)
            resp.close()
            resp.release_conn()

    def replace_pod_status(self, pod: Obj) -> Obj:
        meta = pod["metadata"]
        return self._call(self.core.replace_namespaced_pod_status, meta["name"], meta["namespace"], pod)

    def patch_pod(self, namespace: str, name: str, patch: Obj) -> Obj:
        return self._call(self.core.patch_namespaced_pod, name, namespace, patch, _content_type=STRATEGIC)

    def delete_pod(self, namespace: str, name: str, uid: str, grace_seconds: int | None = 0) -> bool:
        """Delete the pod if it still has ``uid``; False when it is gone or is another pod now.

        ``grace_seconds`` None: the pod's own grace period."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self._call(self.core.delete_namespaced_pod, name, namespace, body=body)
            return True
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise

    # -- events ---------------------------------------------------------------------------------

    def create_event(self, event: Obj) -> Obj:
        return self._call(self.core.create_namespaced_event, event["metadata"]["namespace"], event)

    # -- nodes ----------------------------------------------------------------------------------

    def get_node(self, name: str) -> Obj | None:
        try:
            return self._call(self.core.read_node, name)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def create_node(self, node: Obj) -> Obj:
        return self._call(self.core.create_node, node)

    def replace_node(self, node: Obj) -> Obj:
        return self._call(self.core.replace_node, node["metadata"]["name"], node)

    def delete_node(self, name: str) -> bool:
        """Delete the Node; False when it was gone already."""
        try:
            self._call(self.core.delete_node, name)
            return True
        except KubeError as exc:
            if exc.not_found:
                return False
            raise

    def patch_node_status(self, name: str, patch: Obj) -> Obj:
        return self._call(self.core.patch_node_status, name, patch, _content_type=STRATEGIC)

    # -- leases ---------------------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._call(self.coord.read_namespaced_lease, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def create_lease(self, lease: Obj) -> Obj:
        return self._call(self.coord.create_namespaced_lease, lease["metadata"]["namespace"], lease)

    def replace_lease(self, lease: Obj) -> Obj:
        meta = lease["metadata"]
        return self._call(self.coord.replace_namespaced_lease, meta["name"], meta["namespace"], lease)

    # -- what pods reference (producer/content.py) -----------------------------------------------

    def get_configmap(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._call(self.core.read_namespaced_config_map, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def get_secret(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._call(self.core.read_namespaced_secret, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def create_token(
        self, namespace: str, service_account: str, audience: str, seconds: int, pod_name: str, pod_uid: str
    ) -> str:
        """A TokenRequest for ``service_account`` bound to the pod (``boundObjectRef``): the token."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid},
            },
        }
        answer = self._call(
            self.core.create_namespaced_service_account_token, service_account, namespace, body
        )
        return str((answer.get("status") or {}).get("token") or "")

    # -- statefulsets ---------------------------------------------------------------------------

    def get_statefulset(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._call(self.apps.read_namespaced_stateful_set, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
