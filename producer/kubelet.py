"""The kubelet API of the virtual node: what the API server dials for ``kubectl logs``, ``exec``, ``/pods``.

The producer serves HTTPS (stdlib ``http.server`` behind ``ssl``; a certificate from
``--kubelet-cert/--kubelet-key``, else one issued at start from a throw-away CA made with
:mod:`vkec2.ca`; optionally client certificates checked against ``--kubelet-client-ca``) on the
node's kubelet port. ``/containerLogs/{namespace}/{pod}/{container}`` looks the pod up among this
node's Redis records and streams the container's log from the agent on its instance as it arrives
(chunked; ``follow`` until the container ends or the client goes away; ``tailLines``,
``sinceSeconds``/``sinceTime``, ``timestamps``, ``limitBytes``, ``previous``).
``/exec/{namespace}/{pod}[/{uid}]/{container}`` speaks the Kubernetes WebSocket remote-command
protocol (``v5.channel.k8s.io`` and ``v4.channel.k8s.io``; channel 0 stdin, 1 stdout, 2 stderr,
3 status, 4 resize, 255 close) over a small RFC 6455 implementation of this module, relaying to
the agent's Exec stream; SPDY is not spoken. ``/healthz`` answers ``ok`` and ``/pods`` is a PodList
of this node's pods built from the records. This is the one place the producer reads from agents
(design rule), through its own :class:`~vkec2.agent_client.AgentClient` per stream, whose channel
is closed to cancel the agent call when the client disconnects.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import math
import os
import queue
import selectors
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vkec2.agent_client.client import AgentClient
from vkec2.ca import ClientTls, FleetCA
from vkec2.config import AgentConnection
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import PodRecord
from vkec2.errors import AgentError, AgentIdentityMismatch, AgentRejected, AgentUnavailable
from vkec2.store.redis_store import Store

log = logging.getLogger("producer.kubelet")

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024
FIRST_CHUNK_WAIT = 2.0  # how long a log request waits for the agent's first answer before sending 200
WRITE_TIMEOUT = 60.0


# -- RFC 6455 framing (shared with the tests' client) -----------------------------------------------


class ProtocolError(Exception):
    """The peer broke the WebSocket protocol; the connection is closed with code 1002."""


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def _xor(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    stream = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes = b"", *, mask: bool = False) -> bytes:
    """One final frame; clients must ``mask`` (RFC 6455 §5.3), servers must not."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def close_frame(code: int = 1000, reason: str = "", *, mask: bool = False) -> bytes:
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120], mask=mask)


class FrameReader:
    """Incremental frame parser: ``feed(bytes)`` returns the complete messages as (opcode, payload).

    Fragmented data messages are reassembled; control frames (close, ping, pong) are returned as
    they come, even between fragments. A server's reader requires masked frames, a client's
    unmasked ones.
    """

    def __init__(self, *, masked: bool, max_message: int = MAX_MESSAGE) -> None:
        self._masked = masked
        self._max = max_message
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._opcode: int | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode >= 0x8:
                if not fin or len(payload) > 125:
                    raise ProtocolError("fragmented or oversized control frame")
                out.append((opcode, payload))
                continue
            if opcode == OP_CONT:
                if self._opcode is None:
                    raise ProtocolError("continuation frame without a message to continue")
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._opcode is not None:
                    raise ProtocolError("new data frame inside a fragmented message")
                self._opcode = opcode
            else:
                raise ProtocolError(f"unknown opcode {opcode:#x}")
            self._parts.append(payload)
            if sum(len(p) for p in self._parts) > self._max:
                raise ProtocolError(f"message larger than {self._max} bytes")
            if fin:
                out.append((self._opcode, b"".join(self._parts)))
                self._opcode, self._parts = None, []

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        if bool(b1 & 0x80) != self._masked:
            raise ProtocolError("client frames must be masked" if self._masked else "server frame is masked")
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
        if n > self._max:
            raise ProtocolError(f"frame larger than {self._max} bytes")
        key = b""
        if self._masked:
            if len(buf) < pos + 4:
                return None
            key, pos = bytes(buf[pos : pos + 4]), pos + 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        return bool(b0 & 0x80), b0 & 0x0F, _xor(payload, key) if key else payload


# -- TLS ------------------------------------------------------------------------------------------


def serving_context(
    node: str,
    *,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_ca_file: str | None = None,
    addresses: tuple[str, ...] = (),
) -> ssl.SSLContext:
    """The server's TLS context: the given certificate, or one issued now from a throw-away CA.

    With ``client_ca_file`` every client must present a certificate that CA signed (the API server's
    kubelet client certificate); without it the endpoint does not authenticate its clients.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    else:
        ca = FleetCA.create(f"vkec2 kubelet CA of {node}")
        sans: list[x509.GeneralName] = [x509.DNSName(node), x509.DNSName("localhost")]
        for addr in {"127.0.0.1", *addresses}:
            with contextlib.suppress(ValueError):
                sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        issued = ca._issue(node, sans, ExtendedKeyUsageOID.SERVER_AUTH, 397)
        with tempfile.TemporaryDirectory(prefix="vkec2-kubelet-") as tmp:
            chain, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            chain.write_bytes(issued.cert_pem + ca.cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(issued.key_pem)
            ctx.load_cert_chain(str(chain), str(key))
    if client_ca_file:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca_file)
    return ctx


# -- requests -------------------------------------------------------------------------------------


class HttpError(Exception):
    """An error answer: HTTP status, Kubernetes reason, message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def bad_request(message: str) -> HttpError:
    return HttpError(400, "BadRequest", message)


def agent_http_error(exc: AgentError) -> HttpError:
    if isinstance(exc, AgentRejected):
        return bad_request(str(exc))
    if isinstance(exc, AgentUnavailable | AgentIdentityMismatch):
        return HttpError(503, "ServiceUnavailable", str(exc))
    return HttpError(500, "InternalError", str(exc))


def query_bool(query: Mapping[str, list[str]], name: str) -> bool:
    """Kubernetes query booleans: absent is false; ``0``/``f``/``false`` are false; anything else true."""
    values = query.get(name)
    if not values:
        return False
    return values[0].lower() not in ("0", "f", "false")


def query_int(query: Mapping[str, list[str]], name: str, minimum: int) -> int | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        raise bad_request(f"{name}: {values[0]!r} is not an integer") from None
    if value < minimum:
        raise bad_request(f"{name}: must be greater than or equal to {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: Mapping[str, list[str]], now: float | None = None) -> LogOptions:
        since = query_int(query, "sinceSeconds", 1)
        since_time = (query.get("sinceTime") or [""])[0]
        if since_time:
            if since is not None:
                raise bad_request("at most one of sinceSeconds or sinceTime may be specified")
            try:
                when = dt.datetime.fromisoformat(since_time.replace("Z", "+00:00"))
            except ValueError:
                raise bad_request(f"sinceTime: {since_time!r} is not an RFC 3339 time") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            age = (time.time() if now is None else now) - when.timestamp()
            since = max(1, math.ceil(age))
        return cls(
            follow=query_bool(query, "follow"),
            tail_lines=query_int(query, "tailLines", 0),
            since_seconds=since,
            timestamps=query_bool(query, "timestamps"),
            previous=query_bool(query, "previous"),
            limit_bytes=query_int(query, "limitBytes", 1),
        )


def container_names(pod: Mapping[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    kinds = ("initContainers", "containers", "ephemeralContainers")
    return [str(c.get("name")) for kind in kinds for c in spec.get(kind) or [] if c.get("name")]


def pod_object(record: PodRecord) -> dict[str, Any]:
    """The pod as this node reports it: the desired object with the fleet's status."""
    from producer.status import FleetView, build_status

    pod: dict[str, Any] = copy.deepcopy(record.spec) if record.spec else {"apiVersion": "v1", "kind": "Pod"}
    meta: dict[str, Any] = pod.setdefault("metadata", {})
    meta.setdefault("name", record.name)
    meta.setdefault("namespace", record.namespace or "default")
    meta.setdefault("uid", record.uid)
    view = FleetView(
        record.phase,
        record.reason,
        record.message,
        record.instance_id,
        record.private_ip,
        list(record.conditions),
        list(record.container_statuses),
        record.updated_at,
    )
    pod["status"] = build_status(pod, view, record.created_at or time.time())
    return pod


# -- full-duplex I/O on one socket ----------------------------------------------------------------


class Wire:
    """Single-threaded full-duplex I/O on one (TLS) socket.

    Other threads queue bytes with :meth:`send` (``None`` ends the exchange); :meth:`run`, in the
    connection's own thread, writes them in order and hands whatever the peer sends to a callback,
    so the TLS object is only ever used by one thread and a client that disconnects is noticed at
    once even while nothing is being written.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._closed = False

    def send(self, data: bytes | None) -> None:
        """Queue bytes to write (``None``: end); from any thread, also after the exchange ended."""
        with self._lock:  # never write to the pipe's descriptor number once it is closed and reused
            if self._closed:
                return
            self._out.put(data)
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def run(self, on_read: Callable[[bytes], bool]) -> bool:
        """Until ``send(None)`` (returns True) or until the peer closes or ``on_read`` says stop (False)."""
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "peer")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        pending = getattr(self.sock, "pending", lambda: 0)
        try:
            while True:
                ready = {key.data for key, _ in sel.select(0 if pending() else None)}
                if "wake" in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                while True:
                    try:
                        item = self._out.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        return True
                    self.sock.settimeout(WRITE_TIMEOUT)
                    self.sock.sendall(item)
                if "peer" in ready or pending():
                    self.sock.settimeout(0)
                    try:
                        data = self.sock.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        continue
                    if not data or not on_read(data):
                        return False
        except OSError:
            return False
        finally:
            sel.close()
            with self._lock:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
            with contextlib.suppress(OSError):
                self.sock.settimeout(WRITE_TIMEOUT)


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class _LogPump(threading.Thread):
    """Reads the agent's log stream; buffers until the response is committed, then feeds the wire."""

    def __init__(self, chunks: Iterator[bytes], limit: int | None) -> None:
        super().__init__(name="kubelet-logs", daemon=True)
        self._chunks = chunks
        self._left = limit
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._wire: Wire | None = None
        self.answered = threading.Event()  # first chunk, end, or error
        self.done = False
        self.error: AgentError | None = None

    def run(self) -> None:
        try:
            for data in self._chunks:
                if self._left is not None:
                    data = data[: self._left]
                    self._left -= len(data)
                if data:
                    self._emit(_chunk(data))
                if self._left == 0:
                    break
        except AgentError as exc:
            self._finish(exc)
        except Exception as exc:  # never leave the client hanging
            log.exception("log stream failed")
            self._finish(AgentError(str(exc)))
        else:
            self._finish(None)
        finally:
            with contextlib.suppress(Exception):
                self._chunks.close()  # type: ignore[attr-defined]

    def _emit(self, data: bytes) -> None:
        with self._lock:
            if self._wire is not None:
                self._wire.send(data)
            else:
                self._buffer.append(data)
        self.answered.set()

    def _finish(self, error: AgentError | None) -> None:
        with self._lock:
            self.done, self.error = True, error
            if self._wire is not None:
                self._end(self._wire)
        self.answered.set()

    def _end(self, wire: Wire) -> None:
        if self.error is None:
            wire.send(b"0\r\n\r\n")
        else:  # an incomplete chunked body tells the client the stream broke
            log.info("log stream ended with an error: %s", self.error)
        wire.send(None)

    def failed_before_data(self) -> AgentError | None:
        with self._lock:
            return self.error if self.done and not self._buffer else None

    def attach(self, wire: Wire) -> None:
        with self._lock:
            for data in self._buffer:
                wire.send(data)
            self._buffer = []
            self._wire = wire
            if self.done:
                self._end(wire)


class _Stdin:
    """Blocking iterator of stdin chunks fed by the WebSocket reader; ``close()`` ends it."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def put(self, data: bytes) -> None:
        self._q.put(data)

    def close(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item


def exit_status(code: int, command: list[str]) -> dict[str, Any]:
    """The v4/v5 status message of channel 3 for an exit code (what kubectl turns into its exit code)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command {command}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


# -- the server -----------------------------------------------------------------------------------


class KubeletServer:
    """The HTTPS kubelet API of one node; ``start()`` binds and serves in a thread, ``stop()`` ends it."""

    def __init__(
        self,
        store: Store,
        node: str,
        agent: AgentConnection,
        tls: ssl.SSLContext,
        *,
        address: str = "0.0.0.0",
        port: int = 10250,
    ) -> None:
        self.store = store
        self.node = node
        self.agent = agent
        self.tls = tls
        self.address = address
        self.port = port
        self._client_tls: ClientTls | None = None
        self._client_tls_ready = False
        self._lock = threading.Lock()
        self._wires: set[Wire] = set()
        self._httpd: _Httpd | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        httpd = _Httpd((self.address, self.port), _Handler, self)
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="kubelet-api", daemon=True
        )
        self._thread.start()
        log.info("kubelet API of node %s on https://%s:%d", self.node, self.address, self.port)

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            wires = list(self._wires)
        for wire in wires:
            wire.send(None)
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    # -- helpers for the handler ------------------------------------------------------------------
    def agent_client(self) -> AgentClient:
        """A fresh client (one channel) per stream: closing it cancels the agent call."""
        with self._lock:
            if not self._client_tls_ready:
                if self.agent.tls is not None:
                    self._client_tls = ClientTls.from_config(self.agent.tls, client_name="vkec2-producer")
                self._client_tls_ready = True
            tls = self._client_tls
        return AgentClient(self.agent, tls)

    def track(self, wire: Wire, on: bool) -> None:
        with self._lock:
            if on:
                self._wires.add(wire)
            else:
                self._wires.discard(wire)

    def find(self, namespace: str, name: str, uid: str | None = None) -> PodRecord:
        matches = [
            r
            for r in self.store.records(self.node)
            if r.namespace == namespace and r.name == name and (uid is None or r.uid == uid)
        ]
        if not matches:
            raise HttpError(404, "NotFound", f'pod "{namespace}/{name}" not found on node {self.node}')
        # A pod being replaced under the same name: the live one first, then the newest.
        matches.sort(key=lambda r: (not r.deleted, r.created_at), reverse=True)
        return matches[0]

    def target(self, record: PodRecord, container: str) -> AgentTarget:
        names = container_names(record.spec)
        if container not in names:
            raise bad_request(
                f'container "{container}" is not valid for pod "{record.name}": choose one of {names}'
            )
        if not record.endpoint or not record.instance_id:
            raise bad_request(
                f'container "{container}" in pod "{record.name}" is waiting to start: '
                f"the pod is {record.phase.value} and has no running instance yet"
            )
        return AgentTarget(record.endpoint, record.instance_id)


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], api: KubeletServer):
        self.api = api
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the connection's thread (a slow client never blocks accepting others)."""
        raw: socket.socket = request
        raw.settimeout(10)
        try:
            conn = self.api.tls.wrap_socket(raw, server_side=True)
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vkec2-kubelet"
    rbufsize = 0  # never read past the request head: the socket may become a WebSocket
    timeout = 120
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def api(self) -> KubeletServer:
        return self.server.api

    # -- answers --------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: HttpError) -> None:
        """Plain text like the kubelet (the API server passes it on as the message), or a Status."""
        if "application/json" in (self.headers.get("Accept") or ""):
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": err.message,
                "reason": err.reason,
                "code": err.code,
            }
            self._send(err.code, json.dumps(status).encode(), "application/json")
        else:
            self._send(err.code, (err.message + "\n").encode(), "text/plain; charset=utf-8")

    # -- routing --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if parts[0] == "healthz" and len(parts) == 1:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            elif parts[0] == "pods" and parts[1:] in ([], [""]) and self.command == "GET":
                self._pods()
            elif parts[0] == "containerLogs" and len(parts) == 4 and all(parts) and self.command == "GET":
                self._logs(parts[1], parts[2], parts[3], query)
            elif parts[0] == "exec" and len(parts) in (4, 5) and all(parts):
                uid = parts[3] if len(parts) == 5 else None
                self._exec(parts[1], parts[2], uid, parts[-1], query)
            else:
                raise HttpError(404, "NotFound", "404 page not found")
        except HttpError as err:
            self._error(err)
        except AgentError as exc:
            self._error(agent_http_error(exc))

    def _pods(self) -> None:
        items = [pod_object(r) for r in self.api.store.records(self.api.node)]
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        self._send(200, json.dumps(body, default=str).encode(), "application/json")

    # -- logs -----------------------------------------------------------------------------------
    def _logs(self, namespace: str, name: str, container: str, query: Mapping[str, list[str]]) -> None:
        opts = LogOptions.parse(query)
        record = self.api.find(namespace, name)
        target = self.api.target(record, container)
        client = self.api.agent_client()
        try:
            client.status(target)  # an unreachable agent is a 503 before anything is committed
            chunks = client.logs(
                target,
                container,
                follow=opts.follow,
                tail_lines=opts.tail_lines,
                since_seconds=opts.since_seconds,
                timestamps=opts.timestamps,
                previous=opts.previous,
                limit_bytes=opts.limit_bytes,
            )
            pump = _LogPump(chunks, opts.limit_bytes)
            pump.start()
            pump.answered.wait(FIRST_CHUNK_WAIT)  # rejections arrive at once; quiet logs do not
            failed = pump.failed_before_data()
            if failed is not None:
                raise failed
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.close_connection = True
            wire = Wire(self.connection)
            self.api.track(wire, True)
            try:
                pump.attach(wire)
                finished = wire.run(lambda data: True)
                if not finished:
                    log.debug("log client of %s/%s went away", namespace, name)
            finally:
                self.api.track(wire, False)
        finally:
            client.close()  # cancels the agent stream if it is still open

    # -- exec -----------------------------------------------------------------------------------
    def _exec(
        self, namespace: str, name: str, uid: str | None, container: str, query: Mapping[str, list[str]]
    ) -> None:
        if (self.headers.get("Upgrade") or "").lower().startswith("spdy"):
            raise bad_request(
                "this kubelet (vkec2) does not speak SPDY; use a WebSocket remote-command client "
                f"({', '.join(PROTOCOLS)})"
            )
        if (self.headers.get("Upgrade") or "").lower() != "websocket":
            raise bad_request(f"exec needs a WebSocket upgrade ({', '.join(PROTOCOLS)})")
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        protocol = next((p for p in offered if p in PROTOCOLS), None)
        if protocol is None:
            raise bad_request(
                f"none of the offered subprotocols {offered} is supported: use one of {PROTOCOLS}"
            )
        key = self.headers.get("Sec-WebSocket-Key") or ""
        if self.headers.get("Sec-WebSocket-Version") != "13" or not _valid_key(key):
            raise bad_request("bad WebSocket handshake (version 13 and a 16-byte key are required)")
        command = query.get("command") or []
        if not command:
            raise bad_request("you must specify at least one command for the container")
        want_stdin, want_stdout = query_bool(query, "stdin"), query_bool(query, "stdout")
        want_stderr, tty = query_bool(query, "stderr"), query_bool(query, "tty")
        if not (want_stdin or want_stdout or want_stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        record = self.api.find(namespace, name, uid)
        target = self.api.target(record, container)
        client = self.api.agent_client()
        try:
            client.status(target)
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept_key(key))
            self.send_header("Sec-WebSocket-Protocol", protocol)
            self.end_headers()
            self.close_connection = True
            session = _ExecSession(
                self.api,
                Wire(self.connection),
                client,
                target,
                container,
                command,
                stdin=want_stdin,
                stdout=want_stdout,
                stderr=want_stderr and not tty,
                tty=tty,
                v5=protocol.startswith("v5."),
            )
            session.run()
        finally:
            client.close()


class _ExecSession:
    """One exec: agent output → frames on channels 1/2, then the status on 3; frames in → stdin."""

    def __init__(
        self,
        api: KubeletServer,
        wire: Wire,
        client: AgentClient,
        target: AgentTarget,
        container: str,
        command: list[str],
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
        v5: bool,
    ) -> None:
        self.api, self.wire, self.client, self.target = api, wire, client, target
        self.container, self.command = container, list(command)
        self.reader = FrameReader(masked=True)
        self.closing = False
        self.want_stdout, self.want_stderr, self.tty, self.v5 = stdout, stderr, tty, v5
        self.stdin = _Stdin() if stdin else None

    def run(self) -> None:
        pump = threading.Thread(target=self._pump, name="kubelet-exec", daemon=True)
        self.api.track(self.wire, True)
        pump.start()
        try:
            self.wire.run(self._on_read)
        finally:
            self.api.track(self.wire, False)
            if self.stdin is not None:
                self.stdin.close()

    def _frame(self, channel: int, data: bytes) -> None:
        self.wire.send(encode_frame(OP_BINARY, bytes([channel]) + data))

    def _pump(self) -> None:
        status: dict[str, Any]
        try:
            stream = self.client.exec_stream(
                self.target, self.container, self.command, stdin=self.stdin, tty=self.tty
            )
            code = -1
            for kind, payload in stream:
                if kind == "exit" and isinstance(payload, int):
                    code = payload
                    break
                if isinstance(payload, bytes) and payload:
                    if kind == "stdout" and self.want_stdout:
                        self._frame(STDOUT, payload)
                    elif kind == "stderr" and self.want_stderr:
                        self._frame(STDERR, payload)
            status = exit_status(code, self.command)
        except AgentError as exc:
            status = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": str(exc)}
        except Exception as exc:
            log.exception("exec stream failed")
            status = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": str(exc)}
        self._frame(STATUS, json.dumps(status).encode())
        self.closing = True
        self.wire.send(close_frame(1000))
        self.wire.send(None)

    def _on_read(self, data: bytes) -> bool:
        try:
            messages = self.reader.feed(data)
        except ProtocolError as exc:
            log.info("exec client broke the WebSocket protocol: %s", exc)
            self.wire.send(close_frame(1002, str(exc)))
            self.wire.send(None)
            return True
        for opcode, payload in messages:
            if opcode == OP_CLOSE:
                if not self.closing:
                    self.closing = True
                    self.wire.send(close_frame(1000))
                    self.wire.send(None)
                return True
            if opcode == OP_PING:
                self.wire.send(encode_frame(OP_PONG, payload))
            elif opcode == OP_BINARY and payload:
                self._channel(payload[0], payload[1:])
        return True

    def _channel(self, channel: int, data: bytes) -> None:
        if channel == STDIN:
            if self.stdin is not None and data:
                self.stdin.put(data)
        elif channel == CLOSE and self.v5:
            if data[:1] == bytes([STDIN]) and self.stdin is not None:
                self.stdin.close()
        elif channel == RESIZE:
            # The agent supports resize, but AgentClient.exec_stream has no resize input yet.
            log.debug("terminal resize ignored: %s", data[:200])
