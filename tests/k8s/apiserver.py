"""An in-process Kubernetes API server double on a free 127.0.0.1 port, for producer tests without a cluster.
It speaks the REST + watch protocol (JSON only) of the official ``kubernetes`` client and the real
``kubectl`` for core/v1 ``namespaces``, ``nodes`` (+``/status``), ``pods`` (+``/status``; namespaced and
all-namespaces), ``events``, coordination.k8s.io/v1 ``leases`` and apps/v1 ``statefulsets`` (+``/status``;
create defaults as the real registry sets them, 422 without ``spec.selector``/``spec.template``), plus
discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``), ``/healthz`` and
Table output for ``kubectl get``.
MODELLED: one global resourceVersion counter; uid/creationTimestamp/generation (1, +1 on spec change) on
create; generateName; Status error bodies for 400, 404, 409 AlreadyExists, 409 Conflict (stale
resourceVersion, uid or resourceVersion precondition), 410, 415, 422 (missing name, forbidden pod spec
change: only images, activeDeadlineSeconds and added tolerations may change); status-subresource rules (main
writes keep ``status``, ``/status`` writes keep ``spec`` and ownerReferences); no-op writes keep the
resourceVersion and emit no event; PUT, merge patch, JSON patch and a strategic merge patch simplified to
the built-in fields used here (merge keys: conditions and addresses by ``type``; containers, env, volumes,
imagePullSecrets by ``name``; ports by ``containerPort``; volumeMounts by ``mountPath``; podIPs/hostIPs by
``ip``; ownerReferences by ``uid``; finalizers as a set; ``$patch: delete|replace``,
``$deleteFromPrimitiveList`` and ``$retainKeys`` honoured; ``$setElementOrder`` accepted but list order is
not re-sorted; every other list is replaced whole); label selectors (``=``, ``==``, ``!=``, ``in``,
``notin``, exists, ``!``) and field selectors (``=``/``!=`` on ``metadata.name``, ``metadata.namespace`` and
per-resource fields such as ``spec.nodeName``; others give 400); pagination (``limit``/``continue``) and
``resourceVersionMatch=Exact`` served from snapshots rebuilt out of a bounded event history, with 410
Expired once it no longer reaches back; watches as chunked newline-delimited JSON (ADDED/MODIFIED/DELETED,
an object entering or leaving the selector seen as ADDED/DELETED, BOOKMARKs when asked, ``timeoutSeconds``,
an ERROR event carrying a 410 Status when the requested resourceVersion predates the history, initial ADDED
events when no resourceVersion or "0" is given); graceful pod deletion (a bound, non-terminal pod gets
``deletionTimestamp``/``deletionGracePeriodSeconds`` and stays, a shorter grace shortens it; grace 0,
unbound or terminal pods go at once); pod creation defaults (``status.phase=Pending``, restartPolicy,
dnsPolicy, schedulerName, terminationGracePeriodSeconds=30, securityContext, imagePullPolicy,
terminationMessagePath/Policy, resources); namespace existence on create; ``dryRun=All``; TokenReview,
SubjectAccessReview, ``pods/log`` and (upgrade-proxied, :mod:`tests.k8s.streaming`)
``pods/exec``/``attach``/``portforward`` through the nodes' kubelet API (:attr:`FakeKubeApiServer.auth`,
:mod:`tests.k8s.kubelet_double`, which says what it models); ``configmaps``, ``secrets`` and
``serviceaccounts`` as plain objects (no data validation, no immutability) and the
``serviceaccounts/token`` TokenRequest (:attr:`FakeKubeApiServer.tokens`, :mod:`tests.k8s.tokens`).
NOT MODELLED: authentication and
authorization/RBAC of the double's own callers, admission (ServiceAccount, LimitRange, ResourceQuota,
DefaultTolerationSeconds, PodSecurity, NodeRestriction), schema validation and unknown-field rejection
(``fieldValidation`` is accepted and ignored), defaulting beyond the list above (no QoS class, priority,
enableServiceLinks, default tolerations, node status), server-side apply (``application/apply-patch+yaml``
gets 415) and managedFields, protobuf/CBOR/YAML encodings, OpenAPI documents (``/openapi/v2`` and
``/openapi/v3`` answer 404, so ``kubectl apply``/``create`` need ``--validate=false``), aggregated discovery
(kubectl falls back to the legacy documents), finalizers, garbage collection and ``propagationPolicy``,
namespace termination (deleting a namespace removes only that object), PUT-creates, ``pods/binding``,
``eviction``, WebSocket exec/attach/portforward (refused), ``/scale``, every controller (nothing removes a
terminating pod when its grace period ends; nothing writes node or pod status), ``sendInitialEvents``/watch
lists, waiting for a too-new list resourceVersion (served from the current state), watch-cache slow-consumer
eviction, HTTP/2, TLS, and persistence across ``stop()``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import random
import select
import socket
import string
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.k8s.kubelet_double import AuthDouble
from tests.k8s.metrics_api import MetricsApi
from tests.k8s.tokens import TokenDouble

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace or "", name)

SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-vkec2-double",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceType:
    """One served resource: its URL plural, kind, group/version, scope and extras."""

    plural: str
    singular: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    returns_deleted_object: bool = False
    fields: tuple[str, ...] = ()  # extra field-selector paths besides metadata.name/namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES: dict[tuple[str, str], ResourceType] = {
    (r.group, r.plural): r
    for r in (
        ResourceType(
            "namespaces", "namespace", "Namespace", "", "v1", False, ("ns",), True, True, ("status.phase",)
        ),
        ResourceType("nodes", "node", "Node", "", "v1", False, ("no",), True, False, ("spec.unschedulable",)),
        ResourceType(
            "pods",
            "pod",
            "Pod",
            "",
            "v1",
            True,
            ("po",),
            True,
            True,
            (
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ),
        ),
        ResourceType(
            "events",
            "event",
            "Event",
            "",
            "v1",
            True,
            ("ev",),
            False,
            False,
            (
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ),
        ),
        ResourceType("leases", "lease", "Lease", "coordination.k8s.io", "v1", True),
        ResourceType("statefulsets", "statefulset", "StatefulSet", "apps", "v1", True, ("sts",), True),
        # What pods reference (plain CRUD; TokenRequest in tests.k8s.tokens).
        ResourceType("configmaps", "configmap", "ConfigMap", "", "v1", True, ("cm",)),
        ResourceType("secrets", "secret", "Secret", "", "v1", True),
        ResourceType("serviceaccounts", "serviceaccount", "ServiceAccount", "", "v1", True, ("sa",)),
    )
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_PRIMITIVE_SET = "<set>"
# Strategic-merge-patch merge keys, by field path with list positions left out.
_CONTAINER_KEYS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): _PRIMITIVE_SET,
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "podIPs"): "ip",
    ("status", "hostIPs"): "ip",
}
for _list in ("containers", "initContainers", "ephemeralContainers"):
    MERGE_KEYS[("spec", _list)] = "name"
    for _field, _key in _CONTAINER_KEYS.items():
        MERGE_KEYS[("spec", _list, _field)] = _key


class ApiError(Exception):
    """An API failure, rendered as a ``Status`` body with its HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _not_found(rt: ResourceType, name: str) -> ApiError:
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiError(
        404,
        "NotFound",
        f'{qualified} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def _conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def _gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=" and "notin"


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str) -> list[_Requirement]:
    """Parse a label selector string; raise ApiError(400) on syntax it does not understand."""
    reqs: list[_Requirement] = []
    for term in _split_top_level(text):
        for word in (" notin ", " in "):
            if word in term:
                key, _, rest = term.partition(word)
                rest = rest.strip()
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
                values = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
                reqs.append(_Requirement(key.strip(), word.strip(), values))
                break
        else:
            if "!=" in term:
                key, _, value = term.partition("!=")
                reqs.append(_Requirement(key.strip(), "!=", frozenset([value.strip()])))
            elif "=" in term:
                key, _, value = term.replace("==", "=").partition("=")
                reqs.append(_Requirement(key.strip(), "=", frozenset([value.strip()])))
            elif term.startswith("!"):
                reqs.append(_Requirement(term[1:].strip(), "!", frozenset()))
            else:
                reqs.append(_Requirement(term, "exists", frozenset()))
    for req in reqs:
        if (
            not req.key
            or any(c in req.key for c in " ()!=")
            or any(c in v for v in req.values for c in " ()!=")
        ):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: invalid label selector {text!r}")
    return reqs


def _lookup(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and path == "source":
        return str(value.get("component", ""))
    return str(value)


def parse_field_selector(rt: ResourceType, text: str) -> list[tuple[str, bool, str]]:
    """(path, equal?, value) triples; unsupported fields are a 400 like the real server."""
    terms: list[tuple[str, bool, str]] = []
    allowed = {"metadata.name", "metadata.namespace", *rt.fields}
    for term in (t.strip() for t in text.split(",") if t.strip()):
        if "!=" in term:
            key, _, value = term.partition("!=")
            equal = False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            equal = True
        else:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        key = key.strip()
        if key not in allowed:
            raise ApiError(
                400,
                "BadRequest",
                f'"{key}" is not a known field selector: only "{", ".join(sorted(allowed))}"',
            )
        terms.append((key, equal, value.strip()))
    return terms


@dataclass
class _Filter:
    namespace: str | None
    labels: list[_Requirement]
    fields: list[tuple[str, bool, str]]

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        return all((_lookup(obj, path) == value) == equal for path, equal, value in self.fields)


# ----------------------------------------------------------------------------------------------- patching


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return copy.deepcopy(value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(422, "Invalid", f"JSON patch path not found: /{'/'.join(parts)}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"invalid JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind in ("move", "copy"):
            value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            kind, op = "add", {"value": value}
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid", f"JSON patch test failed at {op['path']}")
            continue
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise ApiError(422, "Invalid", "cannot remove the document root")
        parent, last = _walk(doc, parts[:-1]), parts[-1]
        if kind == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if index > len(parent):
                    raise ApiError(422, "Invalid", f"JSON patch index out of range at {op['path']}")
                parent.insert(index, copy.deepcopy(op["value"]))
            elif isinstance(parent, dict):
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise ApiError(422, "Invalid", f"JSON patch cannot add at {op['path']}")
        elif kind in ("remove", "replace"):
            _walk(doc, parts)  # must exist
            if kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        else:
            raise ApiError(422, "Invalid", f"unknown JSON patch operation {kind!r}")
    return doc


def strategic_merge_patch(original: Obj, patch: Obj, path: tuple[str, ...] = ()) -> Obj:
    """Strategic merge patch for the built-in fields listed in MERGE_KEYS (see the module docstring)."""
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)  # type: ignore[no-any-return]
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            elif isinstance(current, dict):
                result[key] = strategic_merge_patch(current, value, (*path, key))
            else:
                result[key] = _strip_directives(value)
        elif isinstance(value, list):
            result[key] = _merge_list(current if isinstance(current, list) else [], value, (*path, key))
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    merge_key = MERGE_KEYS.get(path)
    if merge_key is None:
        return _strip_directives(patch)  # type: ignore[no-any-return]
    if merge_key == _PRIMITIVE_SET:
        merged = list(current)
        merged.extend(v for v in patch if v not in merged)
        return merged
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return _strip_directives(patch)  # type: ignore[no-any-return]
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise ApiError(
                422, "Invalid", f"strategic merge patch: {'.'.join(path)} items need {merge_key!r}"
            )
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_strip_directives(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item, path)
    return merged


# ------------------------------------------------------------------------------------------------ tables


def _age(meta: Obj) -> str:
    created = meta.get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = max(0, int((_now() - _parse_timestamp(created)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


def _table_columns(rt: ResourceType) -> list[Obj]:
    if rt.plural == "pods":
        return [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Status"),
            _col("Restarts", "string"),
            _col("Age"),
            _col("IP", priority=1),
            _col("Node", priority=1),
            _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1),
        ]
    if rt.plural == "nodes":
        return [
            _col("Name", fmt="name"),
            _col("Status"),
            _col("Roles"),
            _col("Age"),
            _col("Version"),
            _col("Internal-IP", priority=1),
            _col("External-IP", priority=1),
            _col("OS-Image", priority=1),
            _col("Kernel-Version", priority=1),
            _col("Container-Runtime", priority=1),
        ]
    if rt.plural == "leases":
        return [_col("Name", fmt="name"), _col("Holder"), _col("Age")]
    if rt.plural == "statefulsets":
        return [_col("Name", fmt="name"), _col("Ready"), _col("Age")]
    if rt.plural == "events":
        return [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")]
    if rt.plural == "namespaces":
        return [_col("Name", fmt="name"), _col("Status"), _col("Age")]
    return [_col("Name", fmt="name"), _col("Age")]


def _table_cells(rt: ResourceType, obj: Obj) -> list[Any]:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    if rt.plural == "pods":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for s in statuses if s.get("ready"))
        phase = status.get("reason") or status.get("phase", "")
        if meta.get("deletionTimestamp"):
            phase = "Terminating"
        gates = spec.get("readinessGates") or []
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        passed = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        gate_cell = f"{passed}/{len(gates)}" if gates else "<none>"
        return [
            meta.get("name"),
            f"{ready}/{len(spec.get('containers') or [])}",
            phase,
            str(sum(int(s.get("restartCount", 0)) for s in statuses)),
            _age(meta),
            status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            gate_cell,
        ]
    if rt.plural == "nodes":
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        state = {"True": "Ready", "False": "NotReady"}.get(str(conditions.get("Ready")), "Unknown")
        if spec.get("unschedulable"):
            state += ",SchedulingDisabled"
        labels = meta.get("labels") or {}
        roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
        if "kubernetes.io/role" in labels:
            roles.append(labels["kubernetes.io/role"])
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        info = status.get("nodeInfo") or {}
        return [
            meta.get("name"),
            state,
            ",".join(roles) or "<none>",
            _age(meta),
            info.get("kubeletVersion", ""),
            addresses.get("InternalIP", "<none>"),
            addresses.get("ExternalIP", "<none>"),
            info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"),
            info.get("containerRuntimeVersion", "<unknown>"),
        ]
    if rt.plural == "leases":
        return [meta.get("name"), spec.get("holderIdentity", ""), _age(meta)]
    if rt.plural == "statefulsets":
        return [meta.get("name"), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}", _age(meta)]
    if rt.plural == "events":
        involved = obj.get("involvedObject") or {}
        return [
            _age(meta),
            obj.get("type", ""),
            obj.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
            obj.get("message", ""),
        ]
    if rt.plural == "namespaces":
        return [meta.get("name"), status.get("phase", ""), _age(meta)]
    return [meta.get("name"), _age(meta)]


def to_table(rt: ResourceType, objects: Iterable[Obj], list_meta: Obj, include: str) -> Obj:
    """A meta.k8s.io/v1 Table, the form ``kubectl get`` asks for."""
    rows = []
    for obj in objects:
        row: Obj = {"cells": _table_cells(rt, obj)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": _table_columns(rt),
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------------- server


@dataclass(frozen=True)
class WatchEvent:
    """One entry of the event history: the object after the change (before it, for ``prev``)."""

    rv: int
    resource: str
    type: str
    obj: Obj
    prev: Obj | None


@dataclass(frozen=True)
class RequestRecord:
    verb: str
    resource: str
    namespace: str
    name: str
    code: int


@dataclass
class _Injected:
    verb: str
    resource: str
    error: ApiError
    remaining: int | None  # None: every matching request, for good
    name: str | None = None  # None: any object


class FakeKubeApiServer:
    """The double. Use as a context manager or call ``start()``/``stop()``; ``url`` is its base URL.

    ``history_size`` bounds the watch/event history (older resourceVersions get 410); ``bookmark_interval``
    is how often watches that asked for bookmarks get one.
    """

    def __init__(self, history_size: int = 10_000, bookmark_interval: float = 5.0) -> None:
        self.history_size = history_size
        self.bookmark_interval = bookmark_interval
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[Key, Obj] = {}
        self._history: deque[WatchEvent] = deque()
        self._rv = 0
        self._compacted = 0  # events with rv <= this are gone from the history
        self._stopped = False
        self._watch_epoch = 0  # bumped by close_watches()
        self._open_watches: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.request_log: deque[RequestRecord] = deque(maxlen=20_000)
        self._injected: list[_Injected] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[Any] = set()
        self.auth = AuthDouble(self)
        self.metrics = MetricsApi()  # metrics.k8s.io, as metrics-server serves it
        self.tokens = TokenDouble(self)
        for ns in DEFAULT_NAMESPACES:
            self.create("namespaces", {"metadata": {"name": ns}})

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeKubeApiServer:
        httpd = _Server(("127.0.0.1", port), _Handler)
        httpd.api = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="fake-kube-apiserver", daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop serving: open watches end, open connections are cut, the port is released."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._cond:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeKubeApiServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test-side API -------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def expire_history(self) -> int:
        """Forget the event history: watches (and exact/continued lists) from any older RV get 410."""
        with self._cond:
            self._history.clear()
            self._compacted = self._rv
            self._cond.notify_all()
            return self._rv

    def close_watches(self) -> None:
        """End every open watch stream cleanly (as an API server restart or a load balancer would)."""
        with self._cond:
            self._watch_epoch += 1
            self._cond.notify_all()

    def open_watches(self, resource: str) -> int:
        """How many watch streams on ``resource`` (e.g. "pods") are open right now."""
        with self._cond:
            return self._open_watches[resource]

    def request_count(self, verb: str, resource: str) -> int:
        """Requests served for (verb, resource), e.g. ("update", "leases") or ("patch", "pods/status")."""
        with self._cond:
            return self.requests[(verb, resource)]

    def inject_error(
        self,
        verb: str,
        resource: str,
        code: int,
        reason: str = "InternalError",
        message: str = "injected by the test",
        times: int | None = 1,
        name: str | None = None,
    ) -> None:
        """Make the next ``times`` (verb, resource) requests fail with ``code`` before doing anything.

        ``times=None`` refuses every such request for good; ``name`` only those naming that object (as
        an admission webhook that rejects one pod would).
        """
        with self._cond:
            self._injected.append(_Injected(verb, resource, ApiError(code, reason, message), times, name))

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of a stored object (``resource`` is the plural, e.g. "pods", "leases"), or None."""
        rt = _resource_type(resource)
        with self._cond:
            obj = self._objects.get((rt.plural, namespace or "" if rt.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects of a resource, sorted by namespace and name."""
        rt = _resource_type(resource)
        with self._cond:
            return [
                copy.deepcopy(o)
                for k, o in sorted(self._objects.items())
                if k[0] == rt.plural and (namespace is None or k[1] == namespace)
            ]

    def history(self) -> list[WatchEvent]:
        """The retained event history, oldest first (treat the objects as read-only)."""
        with self._cond:
            return list(self._history)

    def create(self, resource: str, obj: Obj) -> Obj:
        """Create an object directly (same semantics and watch events as an API POST)."""
        rt = _resource_type(resource)
        ns = obj.get("metadata", {}).get("namespace", "default") if rt.namespaced else ""
        with self._cond:
            return self._create(rt, ns, copy.deepcopy(obj), dry_run=False)

    def wait_for(
        self, predicate: Callable[[FakeKubeApiServer], bool], timeout: float, what: str = "condition"
    ) -> None:
        """Block until ``predicate(self)`` holds (re-checked on each change); TimeoutError at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
                self._cond.wait(min(remaining, 0.5))

    # -- storage core (call with self._cond held) ----------------------------------------------------------

    def _commit(
        self, rt: ResourceType, key: Key, obj: Obj | None, kind: str, prev: Obj | None, dry_run: bool
    ) -> Obj:
        rv = self._rv + 1
        result = copy.deepcopy(obj if obj is not None else prev)
        assert result is not None
        result["metadata"]["resourceVersion"] = str(rv)
        if dry_run:
            return result
        self._rv = rv
        if kind == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = result
        self._history.append(WatchEvent(rv, rt.plural, kind, copy.deepcopy(result), copy.deepcopy(prev)))
        while len(self._history) > self.history_size:
            self._compacted = self._history.popleft().rv
        self._cond.notify_all()
        return copy.deepcopy(result)

    def _check_namespace(self, ns: str) -> None:
        if ns and ("namespaces", "", ns) not in self._objects:
            raise ApiError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )

    def _create(self, rt: ResourceType, ns: str, obj: Obj, dry_run: bool) -> Obj:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        if obj.get("kind", rt.kind) != rt.kind or obj.get("apiVersion", rt.api_version) != rt.api_version:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) / kind "
                f"({obj.get('kind')}) does not match the expected {rt.api_version} {rt.kind}",
            )
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace", ns) != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = ns
            self._check_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    random.choices(string.ascii_lowercase + string.digits, k=5)
                )
            else:
                raise ApiError(
                    422,
                    "Invalid",
                    f"{rt.kind} is invalid: metadata.name: Required value: name or generateName is required",
                )
        name = meta["name"]
        key = (rt.plural, ns, name)
        if key in self._objects:
            qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiError(
                409,
                "AlreadyExists",
                f'{qualified} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        for server_field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _timestamp(_now())
        meta["generation"] = 1
        _apply_create_defaults(rt, obj)
        return self._commit(rt, key, obj, "ADDED", None, dry_run)

    def _update(self, rt: ResourceType, ns: str, name: str, new: Obj, sub: str, dry_run: bool) -> Obj:
        key = (rt.plural, ns, name)
        old = self._objects.get(key)
        if old is None:
            raise _not_found(rt, name)
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if rt.namespaced and meta.get("namespace", ns) != ns:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        old_meta = old["metadata"]
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise _conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        given_rv = meta.get("resourceVersion")
        if given_rv and given_rv != old_meta["resourceVersion"]:
            raise _conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        new["kind"], new["apiVersion"] = rt.kind, rt.api_version
        for fixed in (
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
            else:
                meta.pop(fixed, None)
        meta["name"] = name
        if rt.has_status:
            if sub == "status":
                new["spec"] = copy.deepcopy(old.get("spec"))
                if new["spec"] is None:
                    new.pop("spec")
                if "ownerReferences" in old_meta:
                    meta["ownerReferences"] = copy.deepcopy(old_meta["ownerReferences"])
                else:
                    meta.pop("ownerReferences", None)
            else:
                new["status"] = copy.deepcopy(old.get("status"))
                if new["status"] is None:
                    new.pop("status")
        if rt.plural == "pods" and sub == "":
            _check_pod_update(name, old.get("spec") or {}, new.get("spec") or {})
        if new.get("spec") != old.get("spec") and "generation" in meta:
            meta["generation"] = int(meta["generation"]) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion, no event
        return self._commit(rt, key, new, "MODIFIED", old, dry_run)

    def _delete(self, rt: ResourceType, ns: str, name: str, options: Obj, dry_run: bool) -> Obj:
        key = (rt.plural, ns, name)
        old = self._objects.get(key)
        if old is None:
            raise _not_found(rt, name)
        meta = old["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise _conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise _conflict(
                rt,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        grace = options.get("gracePeriodSeconds")
        if rt.plural == "pods":
            spec, phase = old.get("spec") or {}, (old.get("status") or {}).get("phase")
            if grace is None:
                grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30))
            if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                grace = 0
            grace = max(0, int(grace))
            if grace > 0:
                current = meta.get("deletionGracePeriodSeconds")
                if current is not None and grace >= int(current):
                    return copy.deepcopy(old)  # already terminating with a shorter or equal grace
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = _timestamp(_now() + timedelta(seconds=grace))
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                return self._commit(rt, key, new, "MODIFIED", old, dry_run)
        gone = self._commit(rt, key, None, "DELETED", old, dry_run)
        if rt.returns_deleted_object:
            return gone
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": meta["uid"]},
        }

    def _snapshot(self, rt: ResourceType, rv: int) -> list[Obj]:
        """The resource's objects as they were at ``rv``, rebuilt by undoing newer history."""
        if rv < self._compacted:
            raise _gone(f"too old resource version: {rv} ({self._compacted})")
        state = {k: o for k, o in self._objects.items() if k[0] == rt.plural}
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.resource != rt.plural:
                continue
            meta = event.obj["metadata"]
            key = (rt.plural, meta.get("namespace", ""), meta["name"])
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return [state[k] for k in sorted(state)]

    def _list(self, rt: ResourceType, flt: _Filter, query: dict[str, str]) -> tuple[list[Obj], Obj]:
        rv_param, match = query.get("resourceVersion", ""), query.get("resourceVersionMatch", "")
        limit = int(query.get("limit") or 0)
        token = query.get("continue", "")
        start_after: list[str] | None = None
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                snapshot_rv, start_after = int(decoded["rv"]), list(decoded["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from exc
            try:
                objects = self._snapshot(rt, snapshot_rv)
            except ApiError as exc:
                raise _gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                ) from exc
        elif match == "Exact" and rv_param:
            snapshot_rv = int(rv_param)
            objects = self._snapshot(rt, snapshot_rv)
        else:
            snapshot_rv = self._rv
            objects = [o for k, o in sorted(self._objects.items()) if k[0] == rt.plural]
        items: list[Obj] = []
        remaining = 0
        for obj in objects:
            m = obj["metadata"]
            if start_after is not None and [m.get("namespace", ""), m["name"]] <= start_after:
                continue
            if not flt.matches(obj):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(copy.deepcopy(obj))
        list_meta: Obj = {"resourceVersion": str(snapshot_rv)}
        if remaining:
            last = items[-1]["metadata"]
            list_meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": snapshot_rv, "start": [last.get("namespace", ""), last["name"]]}).encode()
            ).decode()
            list_meta["remainingItemCount"] = remaining
        return items, list_meta


def _resource_type(plural: str) -> ResourceType:
    for (_, name), rt in RESOURCES.items():
        if name == plural:
            return rt
    raise KeyError(f"the double does not serve {plural!r}")


def _apply_create_defaults(rt: ResourceType, obj: Obj) -> None:
    if rt.plural == "namespaces":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        return
    if rt.plural == "statefulsets":
        _statefulset_defaults(obj)
        return
    if rt.plural != "pods":
        return
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for list_name in ("containers", "initContainers"):
        for container in spec.get(list_name) or []:
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
    obj["status"] = {"phase": "Pending"}


def _statefulset_defaults(obj: Obj) -> None:
    """apps/v1 defaulting of a new StatefulSet, and the required fields the client's model insists on."""
    spec = obj.setdefault("spec", {})
    name = obj["metadata"]["name"]
    for required in ("selector", "template"):
        if not spec.get(required):
            raise ApiError(
                422,
                "Invalid",
                f'StatefulSet.apps "{name}" is invalid: spec.{required}: Required value',
                {"name": name, "group": "apps", "kind": "StatefulSet"},
            )
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    obj["status"] = {"replicas": 0, "availableReplicas": 0}


def _check_pod_update(name: str, old: Obj, new: Obj) -> None:
    """Pod specs are immutable except images, activeDeadlineSeconds and added tolerations."""

    def mutable_blanked(spec: Obj) -> Obj:
        spec = copy.deepcopy(spec)
        for list_name in ("containers", "initContainers"):
            for container in spec.get(list_name) or []:
                container.pop("image", None)
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
        return spec

    old_tolerations = old.get("tolerations") or []
    new_tolerations = new.get("tolerations") or []
    if mutable_blanked(old) != mutable_blanked(new) or any(t not in new_tolerations for t in old_tolerations):
        raise ApiError(
            422,
            "Invalid",
            f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not '
            "change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, "
            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing "
            "tolerations)",
            {"name": name, "kind": "Pod"},
        )


# ----------------------------------------------------------------------------------------------- discovery


def _discovery_resources(group: str) -> Obj:
    version = "v1"
    resources: list[Obj] = []
    for (g, _), rt in RESOURCES.items():
        if g != group:
            continue
        verbs = [v for v in VERBS if rt.namespaced or v != "deletecollection" or rt.plural == "nodes"]
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": verbs,
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.plural in ("pods", "statefulsets"):
            entry["categories"] = ["all"]
        resources.append(entry)
        if rt.has_status:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _api_group(group: str) -> Obj:
    gv = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}


def _discovery(path: str, host: str) -> Obj | None:
    groups = sorted({g for g, _ in RESOURCES if g})
    if path == "/version":
        return dict(SERVER_VERSION)
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }
    if path == "/api/v1":
        return _discovery_resources("")
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group(g) for g in groups]}
    for group in groups:
        if path == f"/apis/{group}":
            return _api_group(group)
        if path == f"/apis/{group}/v1":
            return _discovery_resources(group)
    return None


# -------------------------------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    api: FakeKubeApiServer


_TRUE = {"true", "True", "1"}


@dataclass
class _Route:
    rt: ResourceType
    namespace: str  # "" for cluster-scoped or all-namespaces
    name: str
    sub: str


def _route(path: str) -> _Route | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis" and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, rest[2]) in RESOURCES:
        namespace, rest = rest[1], rest[2:]
    if not rest or (group, rest[0]) not in RESOURCES or len(rest) > 3:
        return None
    rt = RESOURCES[(group, rest[0])]
    if namespace and not rt.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and not (sub == "status" and rt.has_status):
        return None
    return _Route(rt, namespace, name, sub)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, delayed ACKs cost 40 ms a request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.api._cond:
            self.server.api._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.api._cond:
            self.server.api._connections.discard(self.connection)
        super().finish()

    # -- plumbing ------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self, raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from exc

    def _send(self, code: int, body: Obj) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- request handling ----------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw = self._read_body()
        path = split.path.rstrip("/") or "/"
        if method == "GET" and path in ("/healthz", "/livez", "/readyz"):
            self._send_text(200, "ok")
            return
        if (
            api.auth.handle(self, method, path, query, raw)
            or api.metrics.handle(self, method, path)
            or api.tokens.handle(self, method, path, raw)
        ):
            return
        if method == "GET":
            doc = _discovery(path, self.headers.get("Host", ""))
            if doc is not None:
                if path == "/apis":
                    doc["groups"].append(api.metrics.api_group())
                self._send(200, doc)
                return
        route = _route(path)
        if route is None:
            self._send(
                404,
                ApiError(404, "NotFound", "the server could not find the requested resource", {}).status(),
            )
            return
        verb = _verb(method, route, query)
        resource = f"{route.rt.plural}/{route.sub}" if route.sub else route.rt.plural
        code = 200
        try:
            with api._cond:
                api.requests[(verb, resource)] += 1
                for inj in api._injected:
                    if (
                        inj.verb == verb
                        and inj.resource == resource
                        and inj.name in (None, route.name)
                        and (inj.remaining is None or inj.remaining > 0)
                    ):
                        if inj.remaining is not None:
                            inj.remaining -= 1
                        raise inj.error
            if verb == "watch":
                self._watch(route, query)
                return
            code, body = self._handle(verb, route, query, raw)
        except ApiError as err:
            code, body = err.code, err.status()
        except Exception as exc:  # a bug in the double: answer like an API server would, not hang up
            code, body = 500, ApiError(500, "InternalError", f"{type(exc).__name__}: {exc}").status()
        finally:
            with api._cond:
                api.request_log.append(RequestRecord(verb, resource, route.namespace, route.name, code))
        self._send(code, body)

    def _filter(self, route: _Route, query: dict[str, str]) -> _Filter:
        return _Filter(
            route.namespace if route.rt.namespaced and route.namespace else None,
            parse_label_selector(query.get("labelSelector", "")),
            parse_field_selector(route.rt, query.get("fieldSelector", "")),
        )

    def _wants_table(self) -> str | None:
        accept = self.headers.get("Accept", "")
        if "as=Table" in accept:
            return "Table"
        return None

    def _handle(self, verb: str, route: _Route, query: dict[str, str], raw: bytes) -> tuple[int, Obj]:
        api, rt = self.server.api, route.rt
        dry_run = query.get("dryRun") == "All"
        if query.get("dryRun") not in (None, "All"):
            raise ApiError(400, "BadRequest", f"unsupported dryRun value {query['dryRun']!r}")
        ns = route.namespace if rt.namespaced else ""
        if rt.namespaced and not ns and verb not in ("list", "watch"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        include = query.get("includeObject", "Metadata")
        with api._cond:
            if verb == "list":
                items, list_meta = api._list(rt, self._filter(route, query), query)
                if self._wants_table():
                    return 200, to_table(rt, items, list_meta, include)
                for item in items:
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
                return 200, {
                    "kind": f"{rt.kind}List",
                    "apiVersion": rt.api_version,
                    "metadata": list_meta,
                    "items": items,
                }
            if verb == "get":
                obj = api._objects.get((rt.plural, ns, route.name))
                if obj is None:
                    raise _not_found(rt, route.name)
                if self._wants_table():
                    return 200, to_table(
                        rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, include
                    )
                return 200, copy.deepcopy(obj)
            if verb == "create":
                return 201, api._create(rt, ns, self._json_body(raw), dry_run)
            if verb == "update":
                return 200, api._update(rt, ns, route.name, self._json_body(raw), route.sub, dry_run)
            if verb == "patch":
                return 200, self._patch(route, ns, raw, dry_run)
            if verb == "delete":
                options = self._json_body(raw) or {}
                if not isinstance(options, dict):
                    raise ApiError(400, "BadRequest", "DeleteOptions must be a JSON object")
                if "gracePeriodSeconds" in query:
                    options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
                result = api._delete(rt, ns, route.name, options, dry_run)
                return (202 if result.get("metadata", {}).get("deletionTimestamp") else 200), result
            if verb == "deletecollection":
                options = self._json_body(raw) or {}
                items, list_meta = api._list(rt, self._filter(route, query), {})
                for item in items:
                    meta = item["metadata"]
                    api._delete(rt, meta.get("namespace", ""), meta["name"], options, dry_run)
                return 200, {
                    "kind": f"{rt.kind}List",
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(api._rv)},
                    "items": [],
                }
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported on {rt.plural}")

    def _patch(self, route: _Route, ns: str, raw: bytes, dry_run: bool) -> Obj:
        api, rt = self.server.api, route.rt
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        patch = self._json_body(raw)
        old = api._objects.get((rt.plural, ns, route.name))
        if old is None:
            raise _not_found(rt, route.name)
        if content_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            new = merge_patch(old, patch)
        elif content_type == STRATEGIC_PATCH:
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a strategic merge patch must be a JSON object")
            new = strategic_merge_patch(old, patch)
        elif content_type == JSON_PATCH:
            new = json_patch(old, patch)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({content_type}) - accepted "
                f"media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}",
            )
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        new_meta = new.get("metadata")
        if isinstance(new_meta, dict) and new_meta.get("resourceVersion") is None:
            new_meta.pop("resourceVersion", None)  # patch removed it: unconditional
        return api._update(rt, ns, route.name, new, route.sub, dry_run)

    # -- watch ---------------------------------------------------------------------------------------------

    def _watch(self, route: _Route, query: dict[str, str]) -> None:
        api, rt = self.server.api, route.rt
        flt = self._filter(route, query)  # a bad selector is a plain HTTP 400 before the stream starts
        table = self._wants_table()
        include = query.get("includeObject", "Metadata")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        deadline = time.monotonic() + timeout if timeout is not None else None
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        rv_param = query.get("resourceVersion", "")
        initial: list[Obj] = []
        with api._cond:
            epoch = api._watch_epoch
            if rv_param in ("", "0"):
                position = api._rv
                initial = [
                    copy.deepcopy(o)
                    for k, o in sorted(api._objects.items())
                    if k[0] == rt.plural and flt.matches(o)
                ]
            else:
                try:
                    position = int(rv_param)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_param!r}") from None
            api._open_watches[rt.plural] += 1
            api._cond.notify_all()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True
        try:
            for obj in initial:
                self._chunk("ADDED", obj, rt, table, include)
            last_bookmark = time.monotonic()
            while True:
                batch: list[WatchEvent] = []
                expired = False
                with api._cond:
                    while True:
                        if api._stopped or api._watch_epoch != epoch:
                            return
                        if position < api._compacted:
                            expired = True
                            break
                        if api._history and api._history[-1].rv > position:
                            for event in reversed(api._history):
                                if event.rv <= position:
                                    break
                                batch.append(event)
                            batch.reverse()
                            break
                        now = time.monotonic()
                        if deadline is not None and now >= deadline:
                            return
                        if bookmarks and now - last_bookmark >= self.server.api.bookmark_interval:
                            break
                        if self._client_gone():
                            return
                        wake = 0.5 if deadline is None else min(0.5, deadline - now)
                        api._cond.wait(max(wake, 0.01))
                    current = api._rv
                if expired:
                    self._chunk(
                        "ERROR",
                        _gone(f"too old resource version: {position} ({api._compacted})").status(),
                        rt,
                        None,
                        include,
                    )
                    return
                for event in batch:
                    position = event.rv
                    for kind, obj in _translate(event, flt):
                        self._chunk(kind, obj, rt, table, include)
                if bookmarks and time.monotonic() - last_bookmark >= self.server.api.bookmark_interval:
                    position = max(position, current)
                    mark = {
                        "kind": rt.kind,
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(position)},
                    }
                    self._chunk("BOOKMARK", mark, rt, None, include)
                    last_bookmark = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
        finally:
            with api._cond:
                api._open_watches[rt.plural] -= 1
                api._cond.notify_all()
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass

    def _client_gone(self) -> bool:
        """True once the watching client has closed its end (so ``open_watches`` stays accurate)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _chunk(self, kind: str, obj: Obj, rt: ResourceType, table: str | None, include: str) -> None:
        if table and kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = to_table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, include)
        data = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _translate(event: WatchEvent, flt: _Filter) -> Iterator[tuple[str, Obj]]:
    """What a filtered watcher sees of one change; entering/leaving the selection is ADDED/DELETED."""
    now, before = flt.matches(event.obj), flt.matches(event.prev)
    if event.type == "DELETED":
        if before or now:
            yield "DELETED", event.obj
    elif now and before:
        yield "MODIFIED", event.obj
    elif now:
        yield "ADDED", event.obj
    elif before:
        yield "DELETED", event.obj


def _verb(method: str, route: _Route, query: dict[str, str]) -> str:
    if method == "GET":
        if route.name:
            return "get"
        return "watch" if query.get("watch") in _TRUE else "list"
    if method == "POST":
        return "create" if not route.name else "post"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    return "delete" if route.name else "deletecollection"
