"""Clients of the producer's kubelet API for tests: HTTPS requests and one WebSocket exec session.

:class:`Api` wraps :mod:`http.client` for one endpoint; :func:`ws_exec` does a remote-command
exchange the way a ``v4``/``v5.channel.k8s.io`` client does — the upgrade request by hand (so that
refusals before it can be inspected), the WebSocket after it with :mod:`wsproto`'s client side —
and collects what arrives on each channel until the server closes.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event
from wsproto.utilities import generate_accept_token


@dataclass
class Api:
    """HTTPS access to one kubelet endpoint."""

    port: int
    ctx: ssl.SSLContext

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = self.connect()
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def log_lines(self, path: str) -> list[str]:
        status, body = self.get(path)
        assert status == 200, body
        return body.decode().splitlines()


@dataclass
class ExecResult:
    status_line: str
    headers: dict[str, str]
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] | None = None
    body: bytes = b""
    closed_by_server: bool = False
    other: list[Event | bytes] = field(default_factory=list)


def ws_exec(
    api: Api,
    path: str,
    protocols: str = "v5.channel.k8s.io, v4.channel.k8s.io",
    send: list[bytes] | None = None,
    upgrade: str = "websocket",
) -> ExecResult:
    """One exec over WebSocket: the handshake, then ``send`` (channel-prefixed payloads), read to close."""
    key = base64.b64encode(os.urandom(16)).decode()
    raw = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    sock = api.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\nUpgrade: {upgrade}\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
        )
        sock.sendall(head.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(4096)
            assert data, f"connection closed during the handshake: {buf!r}"
            buf += data
        head_bytes, rest = buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        result = ExecResult(lines[0], headers)
        if " 101 " not in lines[0]:
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                rest += sock.recv(4096)
            result.body = rest
            return result
        assert headers["sec-websocket-accept"] == generate_accept_token(key.encode()).decode()
        ws = Connection(ConnectionType.CLIENT, trailing_data=rest)
        for payload in send or []:
            sock.sendall(ws.send(BytesMessage(payload)))
        message = b""
        while True:
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    assert ws.state is ConnectionState.REMOTE_CLOSING, f"broken frame: {event.reason}"
                    result.closed_by_server = True
                    sock.sendall(ws.send(event.response()))
                    return result
                if not isinstance(event, BytesMessage):
                    result.other.append(event)
                    continue
                message += event.data
                if not event.message_finished:
                    continue
                payload, message = message, b""
                if not payload:
                    result.other.append(payload)
                elif payload[0] == 1:
                    result.stdout += payload[1:]
                elif payload[0] == 2:
                    result.stderr += payload[1:]
                elif payload[0] == 3:
                    result.status = json.loads(payload[1:])
                else:
                    result.other.append(payload)
            data = sock.recv(65536)
            if not data:
                return result
            ws.receive_data(data)
    finally:
        sock.close()
