"""Probe parsing and validation, the threshold state machine, the handlers one by one, the event list.

The handlers run against servers on free loopback ports started here (HTTP, TCP, grpc.health), so
each is checked for both outcomes; nothing sleeps.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.events import AGGREGATE_SECONDS, EventLog
from agent.model import InvalidArgument
from agent.podspec import parse_pod
from agent.probes import ProbeState, run_handler
from agent.probespec import ProbeSpec
from agent.sim.runtime import SimRuntime
from tests.support.services import free_port


def _pod(container: dict[str, Any], **spec: Any) -> str:
    base = {"name": "app", "command": ["sleep", "1"], **container}
    return json.dumps({"metadata": {"name": "p"}, "spec": {"containers": [base], **spec}})


def _probe(kind: str = "livenessProbe", **container: Any) -> ProbeSpec | None:
    c = parse_pod(_pod(container)).containers[0]
    return {"livenessProbe": c.liveness, "readinessProbe": c.readiness, "startupProbe": c.startup}[kind]


def test_defaults_and_named_ports_are_filled_in() -> None:
    p = _probe(
        "readinessProbe",
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"port": "http", "path": "healthz"}},
    )
    assert p is not None
    assert (p.kind, p.handler, p.host, p.port, p.path, p.scheme) == (
        "Readiness",
        "httpGet",
        "127.0.0.1",
        8080,
        "/healthz",
        "HTTP",
    )
    assert (p.initial_delay, p.period, p.timeout, p.success_threshold, p.failure_threshold) == (
        0,
        10,
        1,
        1,
        3,
    )
    assert p.termination_grace is None
    g = _probe(
        "startupProbe",
        startupProbe={"grpc": {"port": 9000, "service": "s"}, "terminationGracePeriodSeconds": 5},
    )
    assert g is not None and (g.handler, g.port, g.service, g.termination_grace) == ("grpc", 9000, "s", 5.0)
    assert parse_pod(_pod({}, terminationGracePeriodSeconds=7)).termination_grace == 7.0
    assert parse_pod(_pod({})).containers[0].liveness is None


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({}, "livenessProbe must specify exactly one handler"),
        ({"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}, "exactly one handler"),
        ({"exec": {"command": []}}, "livenessProbe.exec.command must be a non-empty list"),
        ({"tcpSocket": {"port": "web"}}, "livenessProbe.tcpSocket.port names no port of the container"),
        ({"tcpSocket": {"port": 70000}}, "livenessProbe.tcpSocket.port must be a port number"),
        ({"grpc": {"port": "web"}}, "livenessProbe.grpc.port must be a port number"),
        ({"httpGet": {"port": 80, "scheme": "FTP"}}, "scheme must be HTTP or HTTPS"),
        ({"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": "x"}]}}, "httpHeaders[0].name"),
        ({"exec": {"command": ["true"]}, "successThreshold": 2}, "successThreshold must be 1 for a liveness"),
        (
            {"exec": {"command": ["true"]}, "periodSeconds": 0},
            "livenessProbe.periodSeconds must be an integer >= 1",
        ),
        ({"exec": {"command": ["true"]}, "failureThreshold": "3"}, "failureThreshold must be an integer"),
        (
            {"exec": {"command": ["true"]}, "initialDelaySeconds": -1},
            "initialDelaySeconds must be an integer >= 0",
        ),
        (
            {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 0},
            "terminationGracePeriodSeconds",
        ),
    ],
)
def test_bad_probes_are_refused_naming_the_field(probe: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse_pod(_pod({"livenessProbe": probe}))
    assert exc.value.code == "INVALID_ARGUMENT"
    assert "spec.containers[0][app].livenessProbe" in exc.value.message and message in exc.value.message


def test_probe_rules_specific_to_readiness_and_init_containers() -> None:
    with pytest.raises(InvalidArgument, match="not allowed on a readiness probe"):
        parse_pod(
            _pod({"readinessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 3}})
        )
    ok = _probe("readinessProbe", readinessProbe={"exec": {"command": ["true"]}, "successThreshold": 3})
    assert ok is not None and ok.success_threshold == 3
    init = {"name": "init", "command": ["true"], "readinessProbe": {"exec": {"command": ["true"]}}}
    raw = json.loads(_pod({}))
    raw["spec"]["initContainers"] = [init]
    with pytest.raises(InvalidArgument, match=r"initContainers\[0\]\[init\].readinessProbe: init containers"):
        parse_pod(json.dumps(raw))


def _spec(kind: str, success: int = 1, failure: int = 3) -> ProbeSpec:
    return ProbeSpec(
        kind=kind, handler="exec", command=("true",), success_threshold=success, failure_threshold=failure
    )


def test_threshold_state_machine() -> None:
    live = ProbeState(_spec("Liveness", failure=3))
    assert live.result is True  # liveness starts as success
    assert [live.observe(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert live.observe(False) is True and live.result is False  # three in a row

    ready = ProbeState(_spec("Readiness", success=2, failure=2))
    assert ready.result is False  # readiness starts as failure
    assert ready.observe(True) is False and ready.observe(True) is True and ready.result is True
    assert ready.observe(False) is False and ready.observe(True) is False  # a single failure is forgiven
    assert ready.observe(False) is False and ready.observe(False) is True and ready.result is False

    startup = ProbeState(_spec("Startup", failure=1))
    assert startup.result is False and startup.observe(True) is True and startup.result is True


def test_event_log_aggregates_repeats_and_stays_bounded() -> None:
    log = EventLog(limit=3)
    a = log.add("Warning", "Unhealthy", "Liveness probe failed: x", "app", now=100.0)
    again = log.add("Warning", "Unhealthy", "Liveness probe failed: x", "app", now=101.0)
    assert (again.seq, again.count, again.first, again.last) == (a.seq, 2, 100.0, 101.0)
    later = log.add(
        "Warning", "Unhealthy", "Liveness probe failed: x", "app", now=101.0 + AGGREGATE_SECONDS + 1
    )
    assert later.seq == a.seq + 1 and later.count == 1  # too long after: a new entry
    for i in range(3):
        log.add("Normal", "Killing", f"k{i}", "app", now=2000.0)
    assert [e.message for e in log.recent()] == ["k0", "k1", "k2"]
    assert log.recent()[-1].seq == a.seq + 4


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = (
            200
            if self.path == "/ok" and self.headers.get("X-Token") == "t"
            else 302
            if self.path == "/moved"
            else 500
        )
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"body")

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _http(port: int, path: str, headers: tuple[tuple[str, str], ...] = ()) -> ProbeSpec:
    return ProbeSpec(kind="Readiness", handler="httpGet", port=port, path=path, headers=headers)


def test_http_handler_success_range_headers_and_errors(http_port: int) -> None:
    assert run_handler(_http(http_port, "/ok", (("X-Token", "t"),)), {}, None)[0] is True
    assert run_handler(_http(http_port, "/moved"), {}, None)[0] is True  # 3xx counts as success
    assert run_handler(_http(http_port, "/ok"), {}, None) == (False, "HTTP probe failed with statuscode: 500")
    ok, why = run_handler(_http(free_port(), "/"), {}, None)
    assert not ok and why.startswith('Get "http://127.0.0.1:')


def test_tcp_and_exec_handlers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert run_handler(ProbeSpec(kind="Liveness", handler="tcpSocket", port=port), {}, None) == (True, "")
    ok, why = run_handler(ProbeSpec(kind="Liveness", handler="tcpSocket", port=free_port()), {}, None)
    assert not ok and why.startswith("dial tcp 127.0.0.1:")
    env = {"PATH": "/usr/bin:/bin", "WORD": "hello"}
    assert run_handler(
        ProbeSpec(kind="Liveness", handler="exec", command=("sh", "-c", "echo $WORD; exit 1")), env, None
    ) == (False, "hello")
    assert run_handler(ProbeSpec(kind="Liveness", handler="exec", command=("true",)), env, None) == (True, "")
    slow = ProbeSpec(kind="Liveness", handler="exec", command=("sleep", "5"), timeout=0.2)
    ok, why = run_handler(slow, env, None)
    assert not ok and "timed out after 0.2s" in why


def test_grpc_handler_checks_the_named_service() -> None:
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)
        servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
        probe = ProbeSpec(kind="Liveness", handler="grpc", port=port, service="svc")
        assert run_handler(probe, {}, None) == (True, "")
        down = ProbeSpec(kind="Liveness", handler="grpc", port=port, service="down")
        assert run_handler(down, {}, None) == (False, 'service unhealthy (responded with "NOT_SERVING")')
        unknown = ProbeSpec(kind="Liveness", handler="grpc", port=port, service="nope")
        ok, why = run_handler(unknown, {}, None)
        assert not ok and "NOT_FOUND" in why
    finally:
        server.stop(0)


def test_the_simulator_accepts_probes_and_treats_them_as_passing() -> None:
    probes = {
        "livenessProbe": {"httpGet": {"port": 8080}},
        "readinessProbe": {"exec": {"command": ["false"]}},
    }
    snap = SimRuntime().launch(_pod(probes))
    assert snap.phase == "Running" and snap.statuses[0].ready and snap.events == ()
    with pytest.raises(InvalidArgument, match="livenessProbe must specify exactly one handler"):
        SimRuntime().launch(_pod({"livenessProbe": {}}))  # refused as the process runtime refuses it


def test_the_pod_grace_period_is_any_number_from_zero_and_the_fleet_caps_it() -> None:
    container = {"name": "app", "command": ["true"]}
    assert parse_pod(_pod(container)).termination_grace == 30.0
    assert parse_pod(_pod(container, terminationGracePeriodSeconds=1e16)).termination_grace == 1e16
    for bad in (-1, "30", True, float("nan"), float("inf")):
        with pytest.raises(InvalidArgument, match="terminationGracePeriodSeconds must be a number >= 0"):
            parse_pod(_pod(container, terminationGracePeriodSeconds=bad))
