"""The producer's kubelet API in process, without a fleet: TLS defaults, answers, the exec session.

A :class:`~producer.kubelet.KubeletServer` on a loopback port with its self-issued certificate
serves records put straight into Redis (no agent runs). The WebSocket side of ``/exec`` is driven
through a socket pair against an :class:`~producer.kubelet.exec.ExecSession` whose command is a
fake that echoes stdin, with frames made by :mod:`wsproto`'s client side or written raw when they
must be broken.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from producer.kubelet import KubeletServer, serving_context
from producer.kubelet.duplex import Duplex
from producer.kubelet.exec import ExecSession
from producer.options import parse_args
from tests.support.kubelet import Api
from tests.support.services import free_port
from vkec2.config import AgentConnection
from vkec2.store.redis_store import Store

NODE = "vk-kubelet-0"


@pytest.fixture
def local_api(redis_url: str) -> Iterator[tuple[KubeletServer, Store, Api]]:
    store = Store.from_url(redis_url, f"t-{uuid.uuid4().hex[:8]}")
    server = KubeletServer(
        store,
        NODE,
        AgentConnection(call_timeout_seconds=5),
        serving_context(NODE, addresses=("127.0.0.1",)),
        address="127.0.0.1",
        port=0,
    )
    server.start()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    yield server, store, Api(server.port, ctx)
    server.stop()
    store.redis.close()


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "x", "command": ["true"]}]},
    }


def test_default_certificate_health_pods_and_error_answers(
    local_api: tuple[KubeletServer, Store, Api],
) -> None:
    server, store, api = local_api
    with socket.create_connection(("127.0.0.1", server.port)) as raw, api.ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert NODE in sans.value.get_values_for_type(x509.DNSName)
    assert api.get("/healthz") == (200, b"ok")

    pending = _pod("pending")
    store.put_desired(pending, NODE)
    status, body = api.get("/pods")
    assert status == 200
    [item] = json.loads(body)["items"]
    assert item["metadata"]["name"] == "pending" and item["status"]["phase"] == "Pending"
    status, body = api.get("/containerLogs/default/pending/main")
    assert status == 400 and b"waiting to start" in body

    # An agent that cannot be reached is a 503, answered before anything is streamed.
    lost = _pod("lost")
    store.put_desired(lost, NODE)
    key = store.keys.pod(lost["metadata"]["uid"])
    store.redis.hset(key, mapping={"endpoint": f"127.0.0.1:{free_port()}", "instance_id": "i-0123456789"})
    status, body = api.get("/containerLogs/default/lost/main?follow=true")
    assert status == 503 and b"i-0123456789" in body

    status, body = api.get("/containerLogs/other/pending/main", headers={"Accept": "application/json"})
    assert status == 404
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'pod "other/pending" not found on node {NODE}',
        "reason": "NotFound",
        "code": 404,
    }
    assert api.get("/exec/default/pending/main?command=ls&stdout=true")[0] == 400  # not an upgrade


# -- the exec session's WebSocket ------------------------------------------------------------------


def _echo(stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
    """A command like ``cat``: stdin back on stdout (terminal sizes ignored), exit 0 once stdin ends."""
    for data in stdin or []:
        if isinstance(data, bytes):
            yield "stdout", data
    yield "exit", 0


@dataclass
class Peer:
    """The client end of a socket pair whose other end an :class:`ExecSession` serves."""

    sock: socket.socket
    session: threading.Thread
    ws: Connection = field(default_factory=lambda: Connection(ConnectionType.CLIENT))

    def send(self, *events: BytesMessage | TextMessage | Ping | CloseConnection) -> None:
        self.sock.sendall(b"".join(self.ws.send(e) for e in events))

    def read_to_close(self) -> tuple[list[bytes], list[bytes], CloseConnection]:
        """Whole binary messages and pong payloads until the server's close."""
        messages: list[bytes] = []
        pongs: list[bytes] = []
        message = b""
        while True:
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    return messages, pongs, event
                if isinstance(event, Pong):
                    pongs.append(bytes(event.payload))
                elif isinstance(event, BytesMessage):
                    message += event.data
                    if event.message_finished:
                        messages.append(message)
                        message = b""
            data = self.sock.recv(65536)
            assert data, "the server went away without a close frame"
            self.ws.receive_data(data)

    def ended(self) -> bool:
        self.session.join(10)
        return not self.session.is_alive()


Command = Callable[[Iterable[bytes | tuple[int, int]] | None], Iterable[tuple[str, bytes | int]]]


class StartPeer:
    """Starts sessions on socket pairs; closes the sockets at the end of the test."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def __call__(self, command: Command = _echo, *, v5: bool = True, max_message: int = 1 << 20) -> Peer:
        server, client = socket.socketpair()
        client.settimeout(10)
        self.sockets += [server, client]
        session = ExecSession(
            Duplex(server),
            command,
            ["cat"],
            stdin=True,
            stdout=True,
            stderr=True,
            v5=v5,
            max_message=max_message,
        )
        thread = threading.Thread(target=session.run, daemon=True)
        thread.start()
        return Peer(client, thread)


@pytest.fixture
def peer() -> Iterator[StartPeer]:
    start = StartPeer()
    yield start
    for s in start.sockets:
        s.close()


def test_exec_session_reassembles_messages_answers_pings_and_ends_with_the_status(peer: StartPeer) -> None:
    p = peer()
    big = bytes(range(256)) * 300  # 76800 bytes: a 64-bit length, sent in irregular pieces
    data = p.ws.send(BytesMessage(b"\x00" + big)) + p.ws.send(Ping(b"p"))
    for i in range(0, len(data), 997):
        p.sock.sendall(data[i : i + 997])
    # A fragmented message with a ping and a text message (no channel data) in between.
    p.send(
        BytesMessage(b"\x00abc", message_finished=False),
        Ping(b"q"),
        BytesMessage(b"de", message_finished=True),
        TextMessage("ignored"),
        BytesMessage(b"\xff\x00"),  # v5: close stdin, so the command ends
    )
    messages, pongs, close = p.read_to_close()
    assert pongs == [b"p", b"q"]
    stdout = b"".join(m[1:] for m in messages if m[0] == 1)
    assert stdout == big + b"abcde"
    assert messages[-1] == b'\x03{"metadata": {}, "status": "Success"}'
    assert close.code == 1000
    p.send(close.response())
    assert p.ended()


def test_exec_session_answers_the_clients_close(peer: StartPeer) -> None:
    stdin_ended = threading.Event()

    def waits(stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
        for _ in stdin or []:
            pass
        stdin_ended.set()
        yield "exit", 0

    p = peer(waits, v5=False)
    p.send(BytesMessage(b"\xff\x00"))  # v4 has no close channel: stdin stays open
    assert not stdin_ended.wait(0.3)
    p.send(CloseConnection(1001, "bye"))
    _, _, close = p.read_to_close()
    assert close.code == 1001 and p.ws.state is ConnectionState.CLOSED
    assert p.ended() and stdin_ended.wait(5)  # the session's end closes the command's stdin


@pytest.mark.parametrize(
    "frame",
    [
        bytes([0x82, 0x01]) + b"x",  # unmasked: clients must mask
        bytes([0x80 | 0x40 | 0x2, 0x80]) + b"\0\0\0\0",  # RSV1 set, no extension negotiated
        bytes([0x09, 0x80]) + b"\0\0\0\0",  # a fragmented control frame
        bytes([0x83, 0x80]) + b"\0\0\0\0",  # a reserved opcode
        bytes([0x00, 0x80]) + b"\0\0\0\0",  # a continuation with nothing to continue
    ],
)
def test_exec_session_refuses_broken_frames_with_a_protocol_error(peer: StartPeer, frame: bytes) -> None:
    p = peer()
    p.sock.sendall(frame)
    _, _, close = p.read_to_close()
    assert close.code == 1002
    assert p.ended()


def test_exec_session_refuses_a_message_larger_than_its_limit(peer: StartPeer) -> None:
    p = peer(max_message=10)
    p.send(BytesMessage(b"\x00" + b"x" * 5, message_finished=False), BytesMessage(b"y" * 5))
    _, _, close = p.read_to_close()
    assert close.code == 1009
    assert p.ended()


# -- flags ------------------------------------------------------------------------------------------


def test_kubelet_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    opts = parse_args(
        [
            "--kubelet-port",
            "10443",
            "--kubelet-cert",
            str(cert),
            "--kubelet-key",
            str(cert),
            "--kubelet-token-webhook",
        ]
    )
    assert (opts.kubelet, opts.kubelet_port, opts.kubelet_cert) == (True, 10443, str(cert))
    assert parse_args(["--no-kubelet"]).kubelet is False
    for argv, message in [
        (["--kubelet-cert", str(cert)], "--kubelet-cert and --kubelet-key must be given together"),
        (["--kubelet-client-ca", str(tmp_path / "missing")], "--kubelet-client-ca:"),
        (["--kubelet-address", "localhost"], "is not an IP address"),
        (["--kubelet-port", "70000"], "is not a TCP port"),
    ]:
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
