"""The API double's ``serviceaccounts/token`` subresource (TokenRequest), and a record of every object read.

Hooked into :class:`tests.k8s.apiserver.FakeKubeApiServer` as :attr:`~FakeKubeApiServer.tokens`:
``POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`` answers a TokenRequest for an existing
ServiceAccount (404 otherwise) with an opaque token ``tok.<n>.<sa>.<audiences>.<pod>`` and the
``expirationTimestamp`` of ``spec.expirationSeconds`` (default 3600; under 600 is a 400, as the
API server's minimum), checking a ``boundObjectRef`` to a Pod against the stored pod (name and uid;
400 when it does not match). Every request is kept in :attr:`TokenDouble.requests`. NOT MODELLED:
signed JWTs (the token is opaque, no TokenReview knows it), the ServiceAccount admission that adds a
default ServiceAccount to namespaces (tests create it), bound Secret objects, the
``serviceaccounts/token`` RBAC check, and the expiry or revocation of issued tokens.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.k8s.apiserver import FakeKubeApiServer

Obj = dict[str, Any]
MIN_SECONDS = 600


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class TokenDouble:
    """TokenRequests against the double's ServiceAccounts and Pods (see the module docstring)."""

    def __init__(self, api: FakeKubeApiServer) -> None:
        self.api = api
        self.requests: list[Obj] = []
        self._lock = threading.Lock()
        self._count = 0

    def handle(self, h: BaseHTTPRequestHandler, method: str, path: str, raw: bytes) -> bool:
        parts = [p for p in path.split("/") if p]
        if not (
            method == "POST"
            and len(parts) == 7
            and parts[:3] == ["api", "v1", "namespaces"]
            and (parts[4], parts[6]) == ("serviceaccounts", "token")
        ):
            return False
        code, body = self._token(parts[3], parts[5], raw)
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        return True

    def _token(self, namespace: str, sa: str, raw: bytes) -> tuple[int, Obj]:
        try:
            request = json.loads(raw or b"{}")
        except ValueError as exc:
            return 400, _status(400, "BadRequest", f"the request body is not valid JSON: {exc}")
        spec = request.get("spec") or {}
        with self._lock:
            self.requests.append({"namespace": namespace, "serviceAccount": sa, **request})
        if self.api.get("serviceaccounts", sa, namespace) is None:
            return 404, _status(404, "NotFound", f'serviceaccounts "{sa}" not found')
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < MIN_SECONDS:
            return 400, _status(
                400,
                "BadRequest",
                f"spec.expirationSeconds: may not specify a duration less than {MIN_SECONDS} seconds",
            )
        bound = spec.get("boundObjectRef") or {}
        pod_name = ""
        if bound:
            pod = self.api.get("pods", str(bound.get("name")), namespace)
            if bound.get("kind") != "Pod" or pod is None or pod["metadata"]["uid"] != bound.get("uid"):
                return 400, _status(400, "BadRequest", f"the bound object {bound} does not exist")
            pod_name = str(bound.get("name"))
        with self._lock:
            self._count += 1
            n = self._count
        audiences = list(spec.get("audiences") or ["https://kubernetes.default.svc"])
        expires = datetime.now(UTC) + timedelta(seconds=seconds)
        return 201, {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": namespace},
            "spec": {**spec, "audiences": audiences, "expirationSeconds": seconds},
            "status": {
                "token": f"tok.{n}.{sa}.{','.join(audiences)}.{pod_name}",
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }
