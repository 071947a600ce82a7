"""The API double's KEP-4006 stream translation: kubectl's WebSocket in, SPDY/3.1 out to the kubelet.

MODELLED (as a 1.30+ API server with ``TranslateStreamCloseWebsocketRequests`` and, from 1.31,
``PortForwardWebsockets``): exec and attach requests offering ``v5.channel.k8s.io`` are answered
with a WebSocket of that protocol and continued to the kubelet as SPDY (offering ``v5`` and ``v4``):
the streams the query asks for are opened (error, stdin, stdout, stderr unless tty, resize with
tty); channel 0 becomes stdin data, 4 resize data, ``[255, 0]`` stdin's FIN; stdout and stderr
data come back on channels 1 and 2, the error stream's status on channel 3, then a normal close.
Port-forward requests offering ``SPDY/3.1+portforward.k8s.io`` are tunnelled: the binary messages
carry kubectl's own SPDY connection, passed to the kubelet's ``portforward.k8s.io`` upgrade as bytes.
NOT MODELLED: ``v4``-only WebSocket clients (proxied as is by the real API server; here refused),
flow control, and the translator's ping/keep-alive timers.
"""

from __future__ import annotations

import json
import selectors
import socket
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from producer.kubelet import spdy

EXEC_PROTOCOL = "v5.channel.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"


def offered(h: BaseHTTPRequestHandler) -> list[str]:
    return [p.strip() for p in (h.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]


def kubelet_headers(sub: str) -> list[str]:
    """The upgrade the translator sends to the kubelet in place of the client's WebSocket."""
    versions = ["portforward.k8s.io"] if sub == "portforward" else ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    return [
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        *(f"X-Stream-Protocol-Version: {v}" for v in versions),
    ]


def accept(h: BaseHTTPRequestHandler, protocol: str) -> None:
    key = h.headers.get("Sec-WebSocket-Key") or ""
    h.send_response(101)
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())
    h.send_header("Sec-WebSocket-Protocol", protocol)
    h.end_headers()
    h.wfile.flush()


def _loop(
    client: socket.socket,
    kubelet: ssl.SSLSocket,
    ws: Connection,
    on_message: Callable[[bytes], None],
    on_kubelet: Callable[[bytes], bool],
) -> None:
    """Until either side ends: client messages to ``on_message``, kubelet bytes to ``on_kubelet``."""
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, "client")
    sel.register(kubelet, selectors.EVENT_READ, "kubelet")
    kubelet.settimeout(0)
    message = b""
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
                if data is not None and (not data or not on_kubelet(data)):
                    if ws.state is ConnectionState.OPEN:
                        client.sendall(ws.send(CloseConnection(CloseReason.NORMAL_CLOSURE)))
                    return
            if "client" in ready:
                data = client.recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, CloseConnection):
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            client.sendall(ws.send(event.response()))
                        return
                    if isinstance(event, Ping):
                        client.sendall(ws.send(event.response()))
                    elif isinstance(event, BytesMessage):
                        message += event.data
                        if event.message_finished:
                            kubelet.settimeout(30)
                            on_message(message)
                            kubelet.settimeout(0)
                            message = b""
    except OSError:
        return
    finally:
        sel.close()


def tunnel(h: BaseHTTPRequestHandler, kubelet: ssl.SSLSocket, early: bytes) -> None:
    """Port forwarding: kubectl's SPDY bytes in WebSocket messages, passed to the kubelet as they are."""
    client, ws = h.connection, Connection(ConnectionType.SERVER)
    if early:
        client.sendall(ws.send(BytesMessage(early)))

    def to_client(data: bytes) -> bool:
        client.sendall(ws.send(BytesMessage(data)))
        return True

    _loop(client, kubelet, ws, kubelet.sendall, to_client)


def translate(h: BaseHTTPRequestHandler, kubelet: ssl.SSLSocket, early: bytes, query: dict[str, str]) -> None:
    """Exec or attach: the v5 WebSocket channels to and from SPDY streams."""
    client, ws = h.connection, Connection(ConnectionType.SERVER)

    def on(name: str) -> bool:
        return query.get(name, "").lower() not in ("", "0", "f", "false")

    kinds = ["error"]
    kinds += [k for k, want in (("stdin", on("stdin")), ("stdout", on("stdout"))) if want]
    if on("stderr") and not on("tty"):
        kinds.append("stderr")
    if on("tty"):
        kinds.append("resize")
    codec = spdy.HeaderCodec()
    parser = spdy.Parser(codec)
    ids = {kind: 2 * i + 1 for i, kind in enumerate(kinds)}
    names = {sid: kind for kind, sid in ids.items()}
    kubelet.sendall(b"".join(spdy.syn_stream(codec, sid, {"streamType": kind}) for kind, sid in ids.items()))
    status = bytearray()
    open_out = {k for k in ("stdout", "stderr", "error") if k in ids}

    def to_kubelet(message: bytes) -> None:
        channel, data = (message[0], message[1:]) if message else (-1, b"")
        if channel == 0 and "stdin" in ids:
            kubelet.sendall(spdy.data_frame(ids["stdin"], data))
        elif channel == 4 and "resize" in ids:
            kubelet.sendall(spdy.data_frame(ids["resize"], data))
        elif channel == 255 and data[:1] == b"\0" and "stdin" in ids:
            kubelet.sendall(spdy.data_frame(ids["stdin"], b"", fin=True))

    def to_client(data: bytes) -> bool:
        for frame in parser.feed(data):
            kind = names.get(frame.stream, "")
            if frame.kind == spdy.GOAWAY or (frame.kind == spdy.RST_STREAM and kind == "error"):
                return False
            if frame.kind != 0:
                continue
            if kind == "error":
                status.extend(frame.data)
            elif kind in ("stdout", "stderr") and frame.data:
                channel = 1 if kind == "stdout" else 2
                client.sendall(ws.send(BytesMessage(bytes([channel]) + frame.data)))
            if frame.fin:
                open_out.discard(kind)
                if kind == "error":
                    body = bytes(status) or json.dumps({"metadata": {}, "status": "Success"}).encode()
                    client.sendall(ws.send(BytesMessage(b"\3" + body)))
        return bool(open_out)

    if early:
        to_client(early)
    _loop(client, kubelet, ws, to_kubelet, to_client)
