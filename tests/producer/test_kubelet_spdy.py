"""SPDY/3.1 in the kubelet API without a fleet: framing, header compression, negotiation, the sessions.

:mod:`producer.kubelet.spdy` is checked frame by frame (round trips, bytes fed one at a time,
malformed frames refused for the connection or for one stream). The exec and port-forward
sessions (:mod:`producer.kubelet.streaming`) are driven over a socket pair by a small SPDY client
made of the same framing, against fake commands and forwarders: streams by ``streamType``, stdin
in, output out, terminal sizes to the command, the status on the error stream (v4 JSON, v3 text),
and a client that breaks the protocol answered with RST_STREAM or GOAWAY and dropped, not waited on.
The agent's side of port forwarding (:mod:`agent.portforward`) is checked against a loopback port.
"""

from __future__ import annotations

import email.message
import hashlib
import json
import socket
import ssl
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.model import FailedPrecondition, InvalidArgument
from agent.portforward import Forward
from producer.kubelet import KubeletServer, serving_context, spdy
from producer.kubelet.auth import request_attributes
from producer.kubelet.duplex import Duplex
from producer.kubelet.streaming import PORT_FORWARD, REMOTE_COMMAND, PortForward, RemoteCommand, negotiate
from producer.kubelet.wire import HttpError
from tests.support.kubelet import Api
from tests.support.services import free_port, wait_until
from vkec2.config import AgentConnection
from vkec2.store.redis_store import Store


class Client:
    """The client end of a socket pair: opens streams, sends data, collects what the server sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.codec = spdy.HeaderCodec()
        self.parser = spdy.Parser(self.codec)
        self.data: dict[int, bytes] = {}
        self.fins: set[int] = set()
        self.replies: set[int] = set()
        self.frames: list[spdy.Frame] = []
        self.eof = False

    def open(self, sid: int, kind: str, **headers: str) -> None:
        self.sock.sendall(spdy.syn_stream(self.codec, sid, {"streamType": kind, **headers}))

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self.sock.sendall(spdy.data_frame(sid, data, fin=fin))

    def until(self, done: Any, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            assert not self.eof, f"connection closed; frames: {self.frames}"
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"timed out; frames so far: {self.frames}") from None
            if not chunk:
                self.eof = True
                continue
            for frame in self.parser.feed(chunk):
                self.frames.append(frame)
                if frame.kind == 0:
                    self.data[frame.stream] = self.data.get(frame.stream, b"") + frame.data
                    if frame.fin:
                        self.fins.add(frame.stream)
                elif frame.kind == spdy.SYN_REPLY:
                    self.replies.add(frame.stream)

    def kinds(self, kind: int) -> list[spdy.Frame]:
        return [f for f in self.frames if f.kind == kind]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


# -- framing ---------------------------------------------------------------------------------------


def test_the_dictionary_and_header_blocks_round_trip_with_one_context_per_direction() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")
    # The exact bytes of the Go peer's dictionary (moby/spdystream), checked once against it.
    assert (
        hashlib.sha256(spdy.DICTIONARY).hexdigest()
        == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )
    client, server = spdy.HeaderCodec(), spdy.HeaderCodec()
    for i in range(3):  # later blocks depend on the earlier ones (a shared zlib stream)
        block = client.encode({"streamType": "stdout", "port": str(8000 + i), "x": ["a", "b"]})
        assert server.decode(block, 1) == {"streamtype": ["stdout"], "port": [str(8000 + i)], "x": ["a", "b"]}
    # A block made by another compressor with the same dictionary decodes the same way.
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    raw = struct.pack(">I", 1) + struct.pack(">I", 4) + b"port" + struct.pack(">I", 2) + b"80"
    other = spdy.HeaderCodec()
    assert other.decode(deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH), 3) == {"port": ["80"]}


def test_every_frame_type_round_trips_even_fed_one_byte_at_a_time() -> None:
    out = spdy.HeaderCodec()
    wire = b"".join(
        [
            spdy.syn_stream(out, 1, {"streamType": "error"}, fin=True),
            spdy.syn_reply(out, 3, {"a": "b"}),
            spdy.headers_frame(out, 3, {"c": "d"}, fin=True),
            spdy.data_frame(5, b"hello", fin=True),
            spdy.rst_stream(7, spdy.CANCEL),
            spdy.settings([(0, 7, 65536)]),
            spdy.ping(9),
            spdy.window_update(5, 1000),
            spdy.goaway(11, spdy.GOAWAY_OK),
        ]
    )
    parser = spdy.Parser(spdy.HeaderCodec())
    frames = [f for byte in wire for f in parser.feed(bytes([byte]))]
    assert [f.kind for f in frames] == [1, 2, 8, 0, 3, 4, 6, 9, 7]
    syn, reply, headers, data, rst, settings, ping, window, goaway = frames
    assert (syn.stream, syn.fin, syn.header("streamType")) == (1, True, "error")
    assert (reply.stream, reply.headers, headers.headers, headers.fin) == (
        3,
        {"a": ["b"]},
        {"c": ["d"]},
        True,
    )
    assert (data.stream, data.data, data.fin) == (5, b"hello", True)
    assert (rst.stream, rst.status) == (7, spdy.CANCEL)
    assert settings.settings == [(0, 7, 65536)]
    assert (ping.ping_id, window.stream, window.delta, goaway.stream) == (9, 5, 1000, 11)


def _control(kind: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, kind, len(payload)) + payload


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (_control(spdy.PING, b"\0\0\0\1", version=2), "version 2"),
        (struct.pack(">II", 1, spdy.MAX_FRAME + 1), "exceeds"),
        (spdy.data_frame(1, b"x").replace(b"\0\0\0\1", b"\0\0\0\0", 1), "stream 0"),
        (_control(spdy.RST_STREAM, b"\0\0\0\1"), "expected 8"),
        (_control(spdy.PING, b"\0\0\0\0\0"), "expected 4"),
        (_control(spdy.SETTINGS, struct.pack(">I", 3) + b"\0" * 8), "3 entries"),
        (
            _control(spdy.SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + b"garbage, not zlib"),
            "corrupt header block",
        ),
        (_control(spdy.SYN_STREAM, b"\0\0\0\0" + b"\0" * 6), "stream 0"),
        (_control(spdy.SYN_REPLY, b"\0\0"), "too short"),
    ],
)
def test_malformed_frames_break_the_connection(wire: bytes, why: str) -> None:
    with pytest.raises(spdy.SpdyError, match=why) as err:
        spdy.Parser(spdy.HeaderCodec()).feed(wire)
    assert err.value.stream == 0


def test_frames_that_break_one_stream_come_out_as_refusals_and_unknown_types_are_ignored() -> None:
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    raw = struct.pack(">I", 1) + struct.pack(">I", 4) + b"Port" + struct.pack(">I", 2) + b"80"
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    wire = (
        _control(spdy.SYN_STREAM, struct.pack(">IIH", 5, 0, 0) + block)
        + _control(spdy.WINDOW_UPDATE, struct.pack(">II", 7, 0))
        + _control(0x55, b"whatever")
        + spdy.ping(1)
    )
    frames = spdy.Parser(spdy.HeaderCodec()).feed(wire)
    assert [(f.kind, f.stream) for f in frames] == [(spdy.REFUSED, 5), (spdy.REFUSED, 7), (spdy.PING, 0)]
    assert b"not lower-case" in frames[0].data and b"zero delta" in frames[1].data


# -- negotiation and authorization -----------------------------------------------------------------


def _handler(upgrade: str = "SPDY/3.1", *protocols: str) -> Any:
    headers = email.message.Message()
    headers["Connection"] = "Upgrade"
    headers["Upgrade"] = upgrade
    for p in protocols:
        headers["X-Stream-Protocol-Version"] = p
    return SimpleNamespace(headers=headers)


def test_negotiation_takes_the_clients_first_supported_protocol() -> None:
    kubectl = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")
    assert negotiate(_handler("SPDY/3.1", *kubectl), REMOTE_COMMAND) == "v5.channel.k8s.io"
    assert negotiate(_handler("SPDY/3.1", "v9.channel.k8s.io, v3.channel.k8s.io"), REMOTE_COMMAND) == (
        "v3.channel.k8s.io"
    )
    assert negotiate(_handler("SPDY/3.1"), REMOTE_COMMAND) == "channel.k8s.io"
    assert negotiate(_handler("SPDY/3.1", "portforward.k8s.io"), PORT_FORWARD) == "portforward.k8s.io"
    with pytest.raises(HttpError) as refused:
        negotiate(_handler("SPDY/3.1", "portforward.k8s.io"), REMOTE_COMMAND)
    assert refused.value.code == 403 and "unable to negotiate protocol" in refused.value.message
    with pytest.raises(HttpError) as old:
        negotiate(_handler("SPDY/2", "v4.channel.k8s.io"), REMOTE_COMMAND)
    assert old.value.code == 400 and "SPDY/3.1" in old.value.message


def test_attach_and_port_forward_are_authorized_as_node_proxy_like_exec() -> None:
    for path in ("/attach/ns/p/c", "/portForward/ns/p", "/portForward/ns/p/uid", "/exec/ns/p/c"):
        attrs = request_attributes("POST", path, "node-1")
        assert (attrs.verb, attrs.resource, attrs.subresource, attrs.node) == (
            "create",
            "nodes",
            "proxy",
            "node-1",
        )
    assert request_attributes("GET", "/portForward/ns/p", "n").verb == "get"


# -- the exec session ------------------------------------------------------------------------------


class FakeCommand:
    """Echoes stdin on stdout and ``err`` on stderr, records terminal sizes, exits with ``code``."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.sizes: list[tuple[int, int]] = []
        self.got_input: bool | None = None

    def __call__(self, stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
        self.got_input = stdin is not None
        yield "stderr", b"err"
        for item in stdin or []:
            if isinstance(item, tuple):
                self.sizes.append(item)
            else:
                yield "stdout", item
        yield "exit", self.code


def _session(
    server: socket.socket, command: FakeCommand, protocol: str = "v4.channel.k8s.io", **want: bool
) -> threading.Thread:
    opts = {"stdin": True, "stdout": True, "stderr": True, "tty": False, **want}
    session = RemoteCommand(Duplex(server), protocol, command, ["sh"], **opts)
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    return thread


def test_exec_streams_stdin_in_output_out_and_the_v4_status_last(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, sock = pair
    thread = _session(server, FakeCommand(code=3))
    c = Client(sock)
    for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")):
        c.open(sid, kind)
    c.until(lambda: c.replies == {1, 3, 5, 7})
    c.send(3, b"hello ")
    c.send(3, b"spdy", fin=True)
    c.until(lambda: {1, 5, 7} <= c.fins)
    assert (c.data[5], c.data[7]) == (b"hello spdy", b"err")
    status = json.loads(c.data[1])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert c.kinds(spdy.WINDOW_UPDATE)  # the data received is acknowledged
    sock.close()  # the client closes: the session ends
    thread.join(5)
    assert not thread.is_alive()


def test_exec_with_a_terminal_passes_resizes_to_the_command(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, sock = pair
    command = FakeCommand()
    _session(server, command, tty=True)
    c = Client(sock)
    for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")):
        c.open(sid, kind)
    c.until(lambda: len(c.replies) == 4)
    c.send(7, b'{"Width":120,"Height":40}{"Width":80,')
    c.send(7, b'"Height":24}')
    wait_until(lambda: len(command.sizes) == 2, 5, "the terminal sizes to reach the command")
    c.send(3, b"x", fin=True)
    c.until(lambda: {1, 5} <= c.fins)
    assert command.sizes == [(120, 40), (80, 24)]
    assert json.loads(c.data[1])["status"] == "Success"
    assert 7 not in c.data or c.data.get(7) == b""


def test_v3_reports_failure_as_text_and_success_as_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    server, sock = pair
    _session(server, FakeCommand(code=2), "v3.channel.k8s.io", stdin=False, stderr=False)
    c = Client(sock)
    c.open(1, "error")
    c.open(3, "stdout")
    c.until(lambda: {1, 3} <= c.fins)
    assert c.data[1].startswith(b"command terminated with non-zero exit code") and b"exit code 2" in c.data[1]


def test_a_client_breaking_the_protocol_gets_goaway_or_rst_and_is_dropped(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, sock = pair
    thread = _session(server, FakeCommand())
    c = Client(sock)
    c.open(1, "error")
    c.send(9, b"no such stream")
    c.open(1, "stdin")  # the same id again
    c.open(11, "video")  # not a stream type of exec
    sock.sendall(spdy.ping(5))
    c.until(lambda: len(c.kinds(spdy.RST_STREAM)) == 3 and c.kinds(spdy.PING))
    assert [(f.stream, f.status) for f in c.kinds(spdy.RST_STREAM)] == [
        (9, spdy.INVALID_STREAM),
        (1, spdy.STREAM_IN_USE),
        (11, spdy.REFUSED_STREAM),
    ]
    assert c.kinds(spdy.PING)[0].ping_id == 5
    sock.sendall(b"\x80\x02\x00\x01 this is not SPDY/3")
    c.until(lambda: bool(c.kinds(spdy.GOAWAY)))
    assert [(f.kind, f.status) for f in c.frames[-1:]] == [(spdy.GOAWAY, spdy.GOAWAY_PROTOCOL_ERROR)]
    thread.join(5)  # the session is over (the server's handler then closes the socket)
    assert not thread.is_alive()


# -- port forwarding -------------------------------------------------------------------------------


def test_port_forward_pairs_streams_by_request_id_and_reports_failures(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, sock = pair
    seen: list[int] = []

    def forward(port: int, data: Iterable[bytes]) -> Iterator[bytes]:
        seen.append(port)
        if port == 81:
            raise FailedPrecondition("cannot connect to port 81 on the instance: refused")
        return (chunk.upper() for chunk in data)

    session = PortForward(Duplex(server), forward, "default/web")
    threading.Thread(target=session.run, daemon=True).start()
    c = Client(sock)
    c.open(1, "error", port="80", requestID="0")
    c.open(3, "error", port="81", requestID="1")
    c.open(5, "data", port="81", requestID="1")
    c.open(7, "data", port="80", requestID="0")
    c.open(9, "error", port="0", requestID="2")
    c.open(11, "data", port="0", requestID="2")
    c.send(7, b"abc", fin=True)
    c.until(lambda: {1, 3, 5, 7, 9, 11} <= c.fins)
    assert c.data[7] == b"ABC" and c.data.get(1, b"") == b""
    assert (
        c.data[3]
        == b"error forwarding port 81 to pod default/web: cannot connect to port 81 on the instance: refused"
    )
    assert (
        c.data[9]
        == b"error forwarding port 0 to pod default/web: invalid port 0: must be between 1 and 65535"
    )
    assert sorted(seen) == [80, 81]


def test_the_agent_forwards_to_a_loopback_port_and_refuses_bad_ports() -> None:
    for bad in (0, -1, 65536):
        with pytest.raises(InvalidArgument, match="between 1 and 65535"):
            Forward(bad)
    with pytest.raises(FailedPrecondition, match=r"cannot connect to port \d+ on the instance"):
        Forward(free_port())
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"hi " + conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    forward = Forward(listener.getsockname()[1])
    request = SimpleNamespace(WhichOneof=lambda _: "data", data=b"there")
    threading.Thread(target=forward.feed, args=(iter([request]),), daemon=True).start()
    assert b"".join(forward.output()) == b"hi there"
    listener.close()


def test_stream_helpers_are_typed_for_the_server() -> None:
    # The session's frames are queued on a Duplex: writes after the end are dropped, never raised.
    a, b = socket.socketpair()
    duplex = Duplex(a)
    session = PortForward(duplex, cast(Any, None), "x")
    duplex.send(None)
    assert session.conn.run() is True
    session.conn.send(spdy.ping(2))
    a.close()
    b.close()


# -- over the kubelet API's HTTPS server -----------------------------------------------------------


def test_the_server_refuses_bad_spdy_upgrades_before_switching(redis_url: str) -> None:
    store = Store.from_url(redis_url, f"t-{uuid.uuid4().hex[:8]}")
    server = KubeletServer(
        store,
        "vk-spdy-0",
        AgentConnection(call_timeout_seconds=5),
        serving_context("vk-spdy-0", addresses=("127.0.0.1",)),
        address="127.0.0.1",
        port=0,
    )
    server.start()
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        api = Api(server.port, ctx)
        spdy_headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
        v4 = {**spdy_headers, "X-Stream-Protocol-Version": "v4.channel.k8s.io"}
        code, body = api.get("/exec/default/missing/main?command=ls&stdout=true", v4)
        assert code == 404, body
        pf = {**spdy_headers, "X-Stream-Protocol-Version": "portforward.k8s.io"}
        code, body = api.get("/exec/default/web/main?command=ls&stdout=true", pf)
        assert code == 403 and b"unable to negotiate protocol" in body
        assert api.get("/exec/default/web/main?stdout=true", v4) == (
            400,
            b"you must specify at least one command for the container\n",
        )
        assert api.get("/portForward/default/missing", pf)[0] == 404
        code, body = api.get("/portForward/default/web", {"Upgrade": "websocket", "Connection": "Upgrade"})
        assert code == 400 and b"SPDY/3.1" in body
        code, body = api.get(
            "/attach/default/web/main?stdout=true", {"Upgrade": "websocket", "Connection": "Upgrade"}
        )
        assert code == 400 and b"SPDY/3.1" in body
        assert api.get("/healthz") == (200, b"ok")
    finally:
        server.stop()
        store.redis.close()


def test_streams_closed_both_ways_no_longer_count_against_the_cap(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("producer.kubelet.spdy_conn.MAX_STREAMS", 4)
    server, sock = pair
    session = PortForward(Duplex(server), lambda port, data: iter([b"%d" % port]), "default/web")
    threading.Thread(target=session.run, daemon=True).start()
    c = Client(sock)
    for i in range(5):  # ten streams in all, never more than two open
        error, data = 4 * i + 1, 4 * i + 3
        c.open(error, "error", port=str(1000 + i), requestID=str(i))
        c.send(error, b"", fin=True)
        c.open(data, "data", port=str(1000 + i), requestID=str(i))
        c.send(data, b"", fin=True)
        c.until(lambda d=data: d in c.fins)
        assert c.data[data] == b"%d" % (1000 + i)
    assert not c.kinds(spdy.RST_STREAM)
    wait_until(lambda: session.conn.streams == {}, 5, "every stream to be closed both ways")
