"""The API double's ``pods/exec``, ``attach`` and ``portforward``: an upgrade-aware proxy to the kubelet.

MODELLED (as the real API server's ``UpgradeAwareHandler`` does for a SPDY client): the pod is
looked up (404), the container defaulted when the pod has one and checked (400), a completed pod
refused (400, ``cannot exec into a container in a completed pod``); the node's kubelet is dialled
like ``pods/log`` (InternalIP and ``daemonEndpoints.kubeletEndpoint.Port`` or
``AuthDouble.kubelet_dial``, over TLS with the double's kubelet client certificate), the request is
sent to ``/exec|/attach/{ns}/{pod}/{container}`` or ``/portForward/{ns}/{pod}`` with the query
(minus ``container``) and the client's ``Connection``, ``Upgrade`` and ``X-Stream-Protocol-Version``
headers, and the kubelet's answer is passed back: a refusal as it came, a ``101`` followed by a
byte pipe both ways until either side closes.
A WebSocket request (kubectl 1.30+ by default) is answered as a 1.30+ API server does, by its
stream translator (:mod:`tests.k8s.ws_translate`): WebSocket to kubectl, SPDY to the kubelet.
NOT MODELLED: ``ExtendWebSocketsToKubelet`` (WebSocket on to kubelets whose node declares support).
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import ssl
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from tests.k8s import ws_translate

KUBELET_PATHS = {"exec": "exec", "attach": "attach", "portforward": "portForward"}
_PASSED_HEADERS = ("Connection", "Upgrade", "X-Stream-Protocol-Version", "User-Agent")


def streaming_route(method: str, parts: list[str]) -> tuple[str, str, str] | None:
    """(namespace, pod, subresource) of a streaming request, else ``None``."""
    if (
        method in ("GET", "POST")
        and len(parts) == 7
        and parts[:3] == ["api", "v1", "namespaces"]
        and parts[4] == "pods"
        and parts[6] in KUBELET_PATHS
    ):
        return parts[3], parts[5], parts[6]
    return None


def _status(code: int, message: str, reason: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _reply(h: BaseHTTPRequestHandler, code: int, message: str, reason: str = "BadRequest") -> None:
    data = json.dumps(_status(code, message, reason)).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def proxy_stream(auth: Any, h: BaseHTTPRequestHandler, namespace: str, name: str, sub: str) -> None:
    """Answer one streaming request of the double (``auth`` is its :class:`AuthDouble`)."""
    h.close_connection = True
    websocket = (h.headers.get("Upgrade") or "").strip().lower() == "websocket"
    wanted = ws_translate.TUNNEL_PROTOCOL if sub == "portforward" else ws_translate.EXEC_PROTOCOL
    if websocket and wanted not in ws_translate.offered(h):
        _reply(h, 400, f"unable to upgrade: a WebSocket {sub} request must offer {wanted}")
        return
    pod = auth.server.get("pods", name, namespace)
    if pod is None:
        _reply(h, 404, f'pods "{name}" not found', "NotFound")
        return
    query = parse_qsl(urlsplit(h.path).query, keep_blank_values=True)
    spec = pod.get("spec") or {}
    target = f"/{KUBELET_PATHS[sub]}/{quote(namespace)}/{quote(name)}"
    if sub != "portforward":
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            _reply(h, 400, f"cannot {sub} into a container in a completed pod; current phase is {phase}")
            return
        names = [c["name"] for kind in ("initContainers", "containers") for c in spec.get(kind) or []]
        container = next((v for k, v in query if k == "container"), "") or (
            names[0] if len(names) == 1 else ""
        )
        if not container:
            message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
            _reply(h, 400, message)
            return
        if container not in names:
            _reply(h, 400, f"container {container} is not valid for pod {name}")
            return
        target += f"/{quote(container)}"
    rest = [(k, v) for k, v in query if k != "container"]
    if rest:
        target += "?" + urlencode(rest)
    where = auth._kubelet(str(spec.get("nodeName") or ""))
    if where is None:
        _reply(h, 400, f"pod {name} does not have a host assigned")
        return
    ctx = auth.kubelet_context()
    try:
        raw = socket.create_connection(where, timeout=10)
        kubelet = ctx.wrap_socket(raw, server_hostname=where[0])
    except OSError as exc:
        _reply(h, 500, f"error dialing backend: {exc}", "InternalError")
        return
    try:
        head = [f"{h.command} {target} HTTP/1.1", f"Host: {where[0]}:{where[1]}", "Content-Length: 0"]
        if websocket:
            head += ws_translate.kubelet_headers(sub)
        else:
            for header in _PASSED_HEADERS:
                head += [f"{header}: {value}" for value in h.headers.get_all(header) or []]
        kubelet.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        auth.streams.append((sub, "websocket" if websocket else "spdy"))
        if not websocket:
            _pipe(h.connection, kubelet)
            return
        answer, early = _response_head(kubelet)
        if b" 101 " not in answer.split(b"\r\n", 1)[0]:
            h.connection.sendall(answer + early)  # the kubelet's refusal, as it came
            return
        ws_translate.accept(h, wanted)
        if sub == "portforward":
            ws_translate.tunnel(h, kubelet, early)
        else:
            ws_translate.translate(h, kubelet, early, dict(query))
    finally:
        with contextlib.suppress(OSError):
            kubelet.close()


def _response_head(kubelet: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """The kubelet's answer up to the end of its head (and, for a refusal, its body), and what follows."""
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        data = kubelet.recv(65536)
        if not data:
            break
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    if b" 101 " in head.split(b"\r\n", 1)[0]:
        return head + b"\r\n\r\n", rest
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(rest) < length:
        data = kubelet.recv(65536)
        if not data:
            break
        rest += data
    return head + b"\r\n\r\n" + rest, b""


def _pipe(client: socket.socket, kubelet: ssl.SSLSocket) -> None:
    """Bytes both ways, in one thread (a TLS socket must not be read and written concurrently)."""
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, "client")
    sel.register(kubelet, selectors.EVENT_READ, "kubelet")
    kubelet.settimeout(0)
    client.settimeout(None)
    try:
        while True:
            ready = {key.data for key, _ in sel.select(0 if kubelet.pending() else 300)}
            if not ready and not kubelet.pending():
                return
            if "kubelet" in ready or kubelet.pending():
                try:
                    data = kubelet.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    data = None
                if data is not None:
                    if not data:
                        return
                    client.sendall(data)
            if "client" in ready:
                data = client.recv(65536)
                if not data:
                    return
                kubelet.settimeout(30)
                kubelet.sendall(data)
                kubelet.settimeout(0)
    except OSError:
        return
    finally:
        sel.close()
