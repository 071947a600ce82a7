"""The producer's kubelet API, end to end: logs and exec of a really running container over HTTPS.

A standalone producer (the real ``vkec2 producer --manifests``) serves the kubelet API on a free
loopback port with a certificate from a test CA and authenticates client certificates from it, as
the API server's kubelet client would present (standalone mode: any such certificate is
authorized). The pod runs through a real Celery worker on moto's EC2 onto an agent simulator of
this module started with ``--runtime process``, so the container really prints a line every 0.2 s.
Requests go through ``http.client`` and a WebSocket client on :mod:`wsproto`
(:mod:`tests.support.kubelet`); ``test_kubelet_local.py`` covers TLS defaults, error answers and the
WebSocket session without a fleet.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from producer.standalone import parse_manifest
from tests.producer.conftest import StartProducer
from tests.support.fleet import FleetHarness
from tests.support.kubelet import Api, ws_exec
from tests.support.services import ManagedProcess, free_port, port_open, wait_until
from vkec2.ca import FleetCA
from vkec2.domain.models import Phase

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


# -- fixtures -------------------------------------------------------------------------------------


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
    # Without a client certificate from the cluster CA, nothing but /healthz is served; a certificate of
    # another CA does not even get through the handshake.
    anonymous = Api(api.port, pki.client_context(with_cert=False))
    assert anonymous.get("/healthz") == (200, b"ok")
    for path in ("/pods", "/containerLogs/default/ticker/main", "/exec/default/ticker/main?command=id"):
        assert anonymous.get(path) == (401, b"Unauthorized\n")
    foreign = Pki(FleetCA.create("test cluster CA"), pki.dir)
    ctx = foreign.client_context()
    ctx.load_verify_locations(cadata=pki.ca.cert_pem.decode())
    with pytest.raises(OSError):
        Api(api.port, ctx).get("/pods")


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
    spdy2 = ws_exec(api, f"{base}?command=date&stdout=true", upgrade="SPDY/2")
    assert " 400 " in spdy2.status_line and b"SPDY/3.1" in spdy2.body
    old = ws_exec(api, f"{base}?command=date&stdout=true", protocols="channel.k8s.io")
    assert " 400 " in old.status_line
    nope = ws_exec(api, "/exec/default/ticker/nope?command=date&stdout=true")
    assert " 400 " in nope.status_line
    gone = ws_exec(api, "/exec/default/missing/main?command=date&stdout=true")
    assert " 404 " in gone.status_line
