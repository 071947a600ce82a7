"""The producer's kubelet API, end to end: logs and exec of a really running container over HTTPS.

A standalone producer (the real ``vkec2 producer --manifests``) serves the kubelet API on a free
loopback port with a certificate from a test CA and requires client certificates from it, as the
API server's kubelet client would present. The pod runs through a real Celery worker on moto's
EC2 onto an agent simulator of this module started with ``--runtime process``, so the container
really prints a line every 0.2 s. Requests go through ``http.client`` and a small WebSocket client
built on the server's own framing helpers; the in-process tests cover TLS defaults, error answers
and the framing without a fleet.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from producer.kubelet import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    KubeletServer,
    ProtocolError,
    accept_key,
    close_frame,
    encode_frame,
    serving_context,
)
from producer.main import parse_args
from producer.standalone import parse_manifest
from tests.producer.conftest import StartProducer
from tests.support.fleet import FleetHarness
from tests.support.services import ManagedProcess, free_port, port_open, start_agent_sim, wait_until
from vkec2.ca import FleetCA
from vkec2.config import AgentConnection
from vkec2.domain.models import Phase
from vkec2.store.redis_store import Store

NODE = "vk-kubelet-0"
TICKER = """\
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.2; done']
  - name: short
    image: busybox
    command: [sh, -c, 'echo one; echo two; sleep 3']
"""
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z line \d+$")


# -- clients --------------------------------------------------------------------------------------


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
    other: list[tuple[int, bytes]] = field(default_factory=list)


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
        assert headers["sec-websocket-accept"] == accept_key(key)
        for payload in send or []:
            sock.sendall(encode_frame(OP_BINARY, payload, mask=True))
        reader = FrameReader(masked=False)
        pending = reader.feed(rest)
        while True:
            for opcode, payload in pending:
                if opcode == OP_CLOSE:
                    result.closed_by_server = True
                    sock.sendall(close_frame(1000, mask=True))
                    return result
                if opcode != OP_BINARY or not payload:
                    result.other.append((opcode, payload))
                elif payload[0] == 1:
                    result.stdout += payload[1:]
                elif payload[0] == 2:
                    result.stderr += payload[1:]
                elif payload[0] == 3:
                    result.status = json.loads(payload[1:])
                else:
                    result.other.append((opcode, payload))
            data = sock.recv(65536)
            if not data:
                return result
            pending = reader.feed(data)
    finally:
        sock.close()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def process_sim(moto_url: str, tmp_path: Path) -> Iterator[str]:
    """An agent simulator of our own whose agents really run the pods (``--runtime process``)."""
    proc, endpoint = start_agent_sim(
        moto_url, extra_args=["--runtime", "process", "--log-dir", str(tmp_path / "container-logs")]
    )
    yield endpoint
    proc.stop()


@dataclass
class Pki:
    ca: FleetCA
    dir: Path

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        if with_cert:
            issued = self.ca.issue_worker_client_cert("kube-apiserver-kubelet-client")
            ctx.load_cert_chain(
                self.write("client.crt", issued.cert_pem), self.write("client.key", issued.key_pem)
            )
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    return Pki(FleetCA.create("test cluster CA"), d)


# -- end to end -----------------------------------------------------------------------------------


def test_logs_and_exec_of_a_running_container_stream_through_the_kubelet_api(
    tmp_path: Path, redis_url: str, moto_url: str, process_sim: str, start_producer: StartProducer, pki: Pki
) -> None:
    fleet = FleetHarness(tmp_path, redis_url, moto_url, process_sim)
    try:
        fleet.start_worker(concurrency=2)
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        (manifests / "ticker.yaml").write_text(TICKER)
        uids = {p["metadata"]["uid"] for p in parse_manifest("ticker.yaml", TICKER, NODE)}
        serving = pki.ca.issue_agent_server_cert("kubelet", ips=["127.0.0.1"])
        port = free_port()
        producer = start_producer(
            fleet,
            NODE,
            "--kubelet-port",
            str(port),
            "--kubelet-cert",
            pki.write("kubelet.crt", serving.cert_pem),
            "--kubelet-key",
            pki.write("kubelet.key", serving.key_pem),
            "--kubelet-client-ca",
            pki.write("ca.crt", pki.ca.cert_pem),
            manifests=manifests,
        )
        api = Api(port, pki.client_context())
        wait_until(lambda: port_open(port) or not producer.alive(), 30, "the kubelet API to listen")
        assert producer.alive(), producer.output()[-3000:]
        fleet.wait_phase(uids, {Phase.RUNNING}, timeout=90)
        _check_logs(api, producer)
        _check_errors(api, pki)
        _check_exec(api)
        status, body = api.get("/pods")
        assert status == 200
        pods = json.loads(body)
        assert pods["kind"] == "PodList"
        [pod] = pods["items"]
        assert (pod["metadata"]["namespace"], pod["metadata"]["name"]) == ("default", "ticker")
        assert pod["metadata"]["uid"] in uids and pod["status"]["phase"] == "Running"
        assert api.get("/healthz") == (200, b"ok")
    finally:
        fleet.stop()


def _check_logs(api: Api, producer: ManagedProcess) -> None:
    logs = "/containerLogs/default/ticker/main"
    wait_until(lambda: len(api.log_lines(logs)) >= 15, 30, "three seconds of output", interval=0.2)

    # tailLines: exactly the last lines, in order.
    last_two = api.log_lines(f"{logs}?tailLines=2")
    assert len(last_two) == 2 and all(line.startswith("line ") for line in last_two)
    a, b = (int(line.split()[1]) for line in last_two)
    assert b == a + 1

    # timestamps, limitBytes, sinceSeconds.
    [stamped] = api.log_lines(f"{logs}?tailLines=1&timestamps=true")
    assert STAMPED.match(stamped), stamped
    assert api.get(f"{logs}?limitBytes=10") == (200, b"line 1\nlin")
    everything = api.log_lines(logs)
    recent = api.log_lines(f"{logs}?sinceSeconds=1")
    assert 1 <= len(recent) < len(everything)

    # follow: lines printed after the request arrive on the open response, one after the other.
    conn = api.connect()
    before = int(api.log_lines(f"{logs}?tailLines=1")[0].split()[1])
    conn.request("GET", f"{logs}?follow=true&tailLines=1")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
    seen: list[tuple[int, float]] = []
    while len(seen) < 4:
        line = resp.readline().decode()
        assert line.startswith("line "), line
        seen.append((int(line.split()[1]), time.monotonic()))
    numbers = [n for n, _ in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 4))
    assert numbers[-1] > before + 1  # printed after the request was made
    assert all(t2 > t1 for (_, t1), (_, t2) in itertools.pairwise(seen))
    assert seen[-1][1] - seen[1][1] >= 0.2  # they came as printed, 0.2 s apart, not in one burst
    conn.close()  # the client goes away: the producer ends the agent stream
    wait_until(
        lambda: "log client of default/ticker went away" in producer.output(), 15, "the stream to be closed"
    )

    # follow on a container that ends: the response ends with it.
    conn = api.connect()
    conn.request("GET", "/containerLogs/default/ticker/short?follow=true")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read().decode().splitlines()[:2] == ["one", "two"]
    conn.close()


def _check_errors(api: Api, pki: Pki) -> None:
    status, body = api.get("/containerLogs/default/nope/main")
    assert status == 404 and b'pod "default/nope" not found' in body
    status, body = api.get("/containerLogs/default/nope/main", headers={"Accept": "application/json"})
    assert status == 404 and json.loads(body)["reason"] == "NotFound"
    status, body = api.get("/containerLogs/default/ticker/nope")
    assert status == 400 and b'container "nope" is not valid' in body
    for query in (
        "tailLines=-1",
        "limitBytes=0",
        "sinceSeconds=abc",
        "sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z",
    ):
        status, body = api.get(f"/containerLogs/default/ticker/main?{query}")
        assert status == 400, (query, body)
    status, body = api.get("/containerLogs/default/ticker/main?previous=true")
    assert status == 400 and b"previous terminated container" in body
    status, _ = api.get("/nothing-here")
    assert status == 404
    # Without a client certificate from the cluster CA, nothing is served.
    with pytest.raises(OSError):
        Api(api.port, pki.client_context(with_cert=False)).get("/healthz")


def _check_exec(api: Api) -> None:
    base = "/exec/default/ticker/main"
    hi = ws_exec(api, f"{base}?command=echo&command=hi&stdout=true&stderr=true")
    assert hi.headers["sec-websocket-protocol"] == "v5.channel.k8s.io"
    assert (hi.stdout, hi.stderr) == (b"hi\n", b"")
    assert hi.status == {"metadata": {}, "status": "Success"}
    assert hi.closed_by_server

    # stdin, ended by v5's close signal (channel 255) so that cat sees end of file.
    cat = ws_exec(api, f"{base}?command=cat&stdin=true&stdout=true", send=[b"\x00hello\n", b"\xff\x00"])
    assert cat.stdout == b"hello\n" and cat.status == {"metadata": {}, "status": "Success"}

    # v4, stderr, and a non-zero exit code as kubectl reads it.
    fail = ws_exec(
        api,
        f"{base}?command=sh&command=-c&command=echo+oops+%3E%262%3B+exit+3&stdout=true&stderr=true",
        protocols="v4.channel.k8s.io",
    )
    assert fail.headers["sec-websocket-protocol"] == "v4.channel.k8s.io"
    assert fail.stderr == b"oops\n"
    assert fail.status is not None and fail.status["status"] == "Failure"
    assert fail.status["reason"] == "NonZeroExitCode"
    assert fail.status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

    # What is refused before the upgrade.
    spdy = ws_exec(api, f"{base}?command=date&stdout=true", upgrade="SPDY/3.1")
    assert " 400 " in spdy.status_line and b"SPDY" in spdy.body
    old = ws_exec(api, f"{base}?command=date&stdout=true", protocols="channel.k8s.io")
    assert " 400 " in old.status_line
    nope = ws_exec(api, "/exec/default/ticker/nope?command=date&stdout=true")
    assert " 400 " in nope.status_line
    gone = ws_exec(api, "/exec/default/missing/main?command=date&stdout=true")
    assert " 404 " in gone.status_line


# -- in process, without a fleet ------------------------------------------------------------------


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


def test_websocket_framing_round_trips_and_refuses_broken_frames() -> None:
    reader = FrameReader(masked=True)
    big = os.urandom(70_000)
    data = encode_frame(OP_BINARY, b"\x01" + big, mask=True) + encode_frame(OP_PING, b"p", mask=True)
    # Fed byte-irregularly, messages come out whole and in order.
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(data), 997):
        out += reader.feed(data[i : i + 997])
    assert out == [(OP_BINARY, b"\x01" + big), (OP_PING, b"p")]

    # A fragmented text message with a control frame in between.
    first = bytes([OP_TEXT]) + bytes([0x80 | 3]) + b"\0\0\0\0" + b"abc"  # FIN=0, zero mask
    last = bytes([0x80 | 0x0]) + bytes([0x80 | 2]) + b"\0\0\0\0" + b"de"
    assert reader.feed(first + encode_frame(OP_PONG, b"", mask=True) + last) == [
        (OP_PONG, b""),
        (OP_TEXT, b"abcde"),
    ]

    refused: list[Callable[[], object]] = [
        lambda: FrameReader(masked=True).feed(encode_frame(OP_BINARY, b"x")),  # unmasked from a client
        lambda: FrameReader(masked=False).feed(encode_frame(OP_BINARY, b"x", mask=True)),
        lambda: FrameReader(masked=False).feed(bytes([0x80 | 0x40 | OP_BINARY, 0])),  # RSV1
        lambda: FrameReader(masked=False).feed(bytes([OP_PING, 0])),  # fragmented control frame
        lambda: FrameReader(masked=False).feed(bytes([0x80 | 0x3, 0])),  # reserved opcode
        lambda: FrameReader(masked=False, max_message=10).feed(encode_frame(OP_BINARY, b"x" * 11)),
    ]
    for attempt in refused:
        with pytest.raises(ProtocolError):
            attempt()
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


def test_kubelet_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    opts = parse_args(["--kubelet-port", "10443", "--kubelet-cert", str(cert), "--kubelet-key", str(cert)])
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
