"""The API double's side of the kubelet API: token and access reviews, ``pods/log`` proxied to kubelets.

:class:`AuthDouble` is plugged into :class:`~tests.k8s.apiserver.FakeKubeApiServer` (its ``auth``).
MODELLED: ``POST /apis/authentication.k8s.io/v1/tokenreviews`` answers ``status.authenticated`` and
``status.user`` (username, uid, groups, extra) for the tokens registered in :attr:`AuthDouble.tokens`
and ``authenticated: false`` with an ``error`` for any other, 400 for an empty token;
``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` answers ``status.allowed``/``denied``/
``reason`` from :attr:`AuthDouble.rules` (first matching rule wins; none: not allowed, empty reason,
as RBAC says "no opinion"), 422 without a user or group or without exactly one of
resource/non-resource attributes; every review received is kept (:attr:`AuthDouble.token_reviews`,
:attr:`AuthDouble.access_reviews`). ``GET /api/v1/namespaces/{ns}/pods/{name}/log`` finds the pod's
node, dials its kubelet (InternalIP and ``daemonEndpoints.kubeletEndpoint.Port``, or
:attr:`AuthDouble.kubelet_dial`) over HTTPS with the double's kubelet client certificate
(:attr:`AuthDouble.kubelet_client_cert`; the kubelet's serving certificate is verified only when
:attr:`AuthDouble.kubelet_ca` is set, like ``--kubelet-certificate-authority``), passes the log
options on and streams the answer back chunked; a kubelet's refusal becomes a Status with the
kubelet's code and its message followed by `` ( pods/log NAME)``, as the real API server reports it.
NOT MODELLED: the caller's own authentication and RBAC (every caller of the double is allowed),
token audiences and expiry, ``selfsubjectaccessreviews``/``localsubjectaccessreviews``,
``nonResourceAttributes`` decisions (never allowed), field/label selector attributes, the
``insecureSkipTLSVerifyBackend`` option, and retries or connection pooling towards kubelets.
``pods/exec``, ``pods/attach`` and ``pods/portforward`` are proxied to the kubelet by
:mod:`tests.k8s.streaming` (see there what it models).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote, urlencode

from tests.k8s.streaming import proxy_stream, streaming_route

Obj = dict[str, Any]

LOG_OPTIONS = ("follow", "previous", "sinceSeconds", "sinceTime", "timestamps", "tailLines", "limitBytes")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests"}


@dataclass(frozen=True)
class AccessRule:
    """One authorization rule; a field left ``None`` matches anything."""

    allow: bool
    user: str | None = None
    group: str | None = None
    verb: str | None = None
    subresource: str | None = None
    reason: str = ""

    def matches(self, spec: Obj) -> bool:
        attrs = spec.get("resourceAttributes") or {}
        return (
            (self.user is None or spec.get("user") == self.user)
            and (self.group is None or self.group in (spec.get("groups") or []))
            and (self.verb is None or attrs.get("verb") == self.verb)
            and (self.subresource is None or attrs.get("subresource", "") == self.subresource)
        )


def _status(code: int, message: str, reason: str | None = None) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "InternalError"),
        "code": code,
    }


@dataclass
class AuthDouble:
    """Reviews and the kubelet proxy of the double; configure the fields, read the recorded reviews."""

    server: Any
    tokens: dict[str, Obj] = field(default_factory=dict)
    rules: list[AccessRule] = field(default_factory=list)
    kubelet_client_cert: tuple[str, str] | None = None
    kubelet_ca: str | None = None
    kubelet_dial: dict[str, tuple[str, int]] = field(default_factory=dict)
    token_reviews: list[Obj] = field(default_factory=list)
    access_reviews: list[Obj] = field(default_factory=list)
    streams: list[tuple[str, str]] = field(default_factory=list)
    """(subresource, ``spdy`` | ``websocket``) of each streaming request proxied to a kubelet."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(
        self, h: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, str], raw: bytes
    ) -> bool:
        """Answer the request if it is one of ours (True), else leave it to the double (False)."""
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
            self._reply(h, *self._token_review(raw))
        elif method == "POST" and parts == ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"]:
            self._reply(h, *self._access_review(raw))
        elif (
            method == "GET"
            and len(parts) == 7
            and parts[:3] == ["api", "v1", "namespaces"]
            and (parts[4], parts[6]) == ("pods", "log")
        ):
            self._pod_log(h, parts[3], parts[5], query)
        elif (stream := streaming_route(method, parts)) is not None:
            proxy_stream(self, h, *stream)
        else:
            return False
        return True

    # -- reviews -----------------------------------------------------------------------------------

    def _token_review(self, raw: bytes) -> tuple[int, Obj]:
        try:
            review = json.loads(raw or b"{}")
        except ValueError as exc:
            return 400, _status(400, f"the request body is not valid JSON: {exc}")
        token = str((review.get("spec") or {}).get("token") or "")
        if not token:
            return 400, _status(400, "token is required for TokenReview in authentication")
        with self._lock:
            self.token_reviews.append(review)
            user = self.tokens.get(token)
        status: Obj = (
            {"authenticated": True, "user": dict(user)}
            if user
            else {
                "authenticated": False,
                "user": {},
                "error": "invalid bearer token",
            }
        )
        return 201, {
            **review,
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": status,
        }

    def _access_review(self, raw: bytes) -> tuple[int, Obj]:
        try:
            review = json.loads(raw or b"{}")
        except ValueError as exc:
            return 400, _status(400, f"the request body is not valid JSON: {exc}")
        spec = review.get("spec") or {}
        if not spec.get("user") and not spec.get("groups"):
            return 422, _status(
                422,
                "SubjectAccessReview is invalid: spec.user: at least one of user or group must be specified",
                "Invalid",
            )
        if bool(spec.get("resourceAttributes")) == bool(spec.get("nonResourceAttributes")):
            return 422, _status(
                422,
                "SubjectAccessReview is invalid: spec: exactly one of nonResourceAttributes or "
                "resourceAttributes must be specified",
                "Invalid",
            )
        with self._lock:
            self.access_reviews.append(review)
            rule = next((r for r in self.rules if spec.get("resourceAttributes") and r.matches(spec)), None)
        status: Obj = {"allowed": False}
        if rule is not None and rule.allow:
            status = {"allowed": True, "reason": rule.reason or "allowed by the double's rule"}
        elif rule is not None:
            status = {
                "allowed": False,
                "denied": True,
                "reason": rule.reason or "denied by the double's rule",
            }
        body = {
            **review,
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "status": status,
        }
        return 201, body

    def _reply(self, h: BaseHTTPRequestHandler, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # -- pods/log ----------------------------------------------------------------------------------

    def kubelet_context(self) -> ssl.SSLContext:
        """TLS toward a kubelet as the API server dials it: its client certificate, the kubelet CA
        (without one, the serving certificate is not verified, as ``--kubelet-certificate-authority``)."""
        if self.kubelet_ca:
            ctx = ssl.create_default_context(cafile=self.kubelet_ca)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.kubelet_client_cert:
            ctx.load_cert_chain(*self.kubelet_client_cert)
        return ctx

    def _kubelet(self, node_name: str) -> tuple[str, int] | None:
        if node_name in self.kubelet_dial:
            return self.kubelet_dial[node_name]
        node = self.server.get("nodes", node_name)
        if node is None:
            return None
        status = node.get("status") or {}
        port = int(((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 10250)
        for addr in status.get("addresses") or []:
            if addr.get("type") == "InternalIP":
                return str(addr["address"]), port
        return None

    def _pod_log(self, h: BaseHTTPRequestHandler, namespace: str, name: str, query: dict[str, str]) -> None:
        pod = self.server.get("pods", name, namespace)
        if pod is None:
            self._reply(h, 404, _status(404, f'pods "{name}" not found'))
            return
        spec = pod.get("spec") or {}
        names = [c["name"] for kind in ("initContainers", "containers") for c in spec.get(kind) or []]
        container = query.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
            self._reply(h, 400, _status(400, message))
            return
        if container not in names:
            self._reply(h, 400, _status(400, f"container {container} is not valid for pod {name}"))
            return
        where = self._kubelet(str(spec.get("nodeName") or ""))
        if where is None:
            self._reply(h, 400, _status(400, f"pod {name} does not have a host assigned"))
            return
        ctx = self.kubelet_context()
        options = {k: v for k, v in query.items() if k in LOG_OPTIONS}
        target = f"/containerLogs/{quote(namespace)}/{quote(name)}/{quote(container)}"
        if options:
            target += "?" + urlencode(options)
        conn = http.client.HTTPSConnection(where[0], where[1], context=ctx, timeout=30)
        try:
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
            except OSError as exc:
                self._reply(h, 500, _status(500, f'Get "https://{where[0]}:{where[1]}{target}": {exc}'))
                return
            if resp.status != 200:
                text = resp.read().decode(errors="replace").strip()
                self._reply(h, resp.status, _status(resp.status, f"{text} ( pods/log {name})"))
                return
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            with contextlib.suppress(OSError):
                while data := resp.read1(65536):
                    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    h.wfile.flush()
                h.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()
