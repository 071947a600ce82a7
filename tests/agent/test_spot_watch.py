"""The agent's Spot notice watch against a fake instance metadata service over HTTP, and without one.

The fake IMDS answers IMDSv2 as EC2 does (a session token from ``PUT /latest/api/token``, required
on every read; 404 while there is no notice). The watch reads an interruption notice before a
rebalance recommendation; a machine without IMDS (a closed port, or one that never answers) costs
one short failed read and never an exception; a real ``python -m agent`` pointed at the fake
reports the notice in CheckApplicationHealth, and the simulator reports one a test injects.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import grpc
import pytest

from agent.convert import status_pb
from agent.model import PodSnapshot, SpotNotice
from agent.spot import (
    ACTION_PATH,
    REBALANCE_PATH,
    MetadataUnavailable,
    NoticedRuntime,
    SpotWatch,
    read_notice,
)
from agent.v1 import simulation_pb2
from tests.agent.conftest import AgentProcess, InProcessAgent, fast_conn, pod, sh, simulation_grpc
from tests.support.loopback import LoopbackServer
from tests.support.services import free_port, wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.agent_client.statuses import app_status
from vkec2.domain.agents import SpotNotice as FleetNotice

TOKEN = "imds-token-1"


class FakeImds(LoopbackServer):
    """IMDSv2 with the Spot paths a test sets (``docs``: path -> JSON body); tokens enforced."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, str]] = {}
        self.unauthorised = 0
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                ok = self.path == "/latest/api/token" and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                )
                self._answer(200, TOKEN.encode()) if ok else self._answer(400)

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    imds.unauthorised += 1
                    self._answer(401)
                    return
                doc = imds.docs.get(self.path)
                self._answer(404) if doc is None else self._answer(200, json.dumps(doc).encode())

        return Handler


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    server = FakeImds().start()
    yield server
    server.stop()


def test_no_notice_then_a_rebalance_then_an_interruption(imds: FakeImds) -> None:
    assert read_notice(imds.url) is None
    imds.docs[REBALANCE_PATH] = {"noticeTime": "2026-01-01T00:00:00Z"}
    assert read_notice(imds.url) == SpotNotice("rebalance", "", "2026-01-01T00:00:00Z")
    imds.docs[ACTION_PATH] = {"action": "terminate", "time": "2026-01-01T00:02:00Z"}
    assert read_notice(imds.url) == SpotNotice("interruption", "terminate", "2026-01-01T00:02:00Z")
    assert imds.unauthorised == 0  # every read carried the IMDSv2 token


def test_no_imds_is_unavailable_at_once_and_the_watch_never_raises() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(MetadataUnavailable):
        read_notice(closed)
    watch = SpotWatch(closed)
    assert watch.poll_once() is False and watch.current() is None
    assert time.monotonic() - began < 5


def test_an_imds_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        began = time.monotonic()
        with pytest.raises(MetadataUnavailable):
            read_notice(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        assert time.monotonic() - began < 3
    finally:
        listener.close()


class StillRuntime:
    """The least runtime: one snapshot; counts notify() calls."""

    def __init__(self) -> None:
        self.notified = 0

    def snapshot(self) -> PodSnapshot:
        return PodSnapshot(phase="Running", pod_uid="u-1", version=3)

    def notify(self) -> None:
        self.notified += 1


def test_the_noticed_runtime_reports_the_latest_notice_and_wakes_watchers(imds: FakeImds) -> None:
    inner = StillRuntime()
    watch = SpotWatch(imds.url)
    runtime = NoticedRuntime(inner, watch)  # type: ignore[arg-type]
    assert watch.poll_once() and runtime.snapshot().spot_notice is None and inner.notified == 0

    imds.docs[ACTION_PATH] = {"action": "stop", "time": "2026-01-01T00:02:00Z"}
    assert watch.poll_once()
    snap = runtime.snapshot()
    assert snap.spot_notice == SpotNotice("interruption", "stop", "2026-01-01T00:02:00Z")
    assert inner.notified == 1 and snap.version == 3
    # On the wire and back in the fleet's terms.
    assert app_status(status_pb(snap)).spot_notice == FleetNotice(
        "interruption", "stop", "2026-01-01T00:02:00Z"
    )
    assert app_status(status_pb(inner.snapshot())).spot_notice is None


def test_the_agent_on_ec2_reports_the_notice_in_its_status(
    imds: FakeImds, tmp_path_factory: pytest.TempPathFactory
) -> None:
    agent = AgentProcess(
        tmp_path_factory.mktemp("agent"),
        "--insecure",
        "--spot-watch",
        "on",
        "--imds-endpoint",
        imds.url,
        "--spot-poll-seconds",
        "0.5",
    )
    client = AgentClient(fast_conn(agent.port))
    try:
        wait_until(lambda: client.serving(agent.target), 20, "the agent to serve")
        client.launch(agent.target, pod(sh("main", "sleep 30")))
        assert client.status(agent.target).spot_notice is None
        imds.docs[ACTION_PATH] = {"action": "terminate", "time": "2026-01-01T00:02:00Z"}

        def noticed() -> bool:
            return client.status(agent.target).spot_notice is not None

        wait_until(noticed, 20, "the agent to report the notice", interval=0.2)
        assert client.status(agent.target).spot_notice == FleetNotice(
            "interruption", "terminate", "2026-01-01T00:02:00Z"
        )
    finally:
        client.close()
        agent.stop()


def test_an_agent_without_imds_serves_as_before(tmp_path_factory: pytest.TempPathFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    agent = AgentProcess(
        tmp_path_factory.mktemp("agent"), "--insecure", "--spot-watch", "on", "--imds-endpoint", closed
    )
    client = AgentClient(fast_conn(agent.port))
    try:
        wait_until(lambda: client.serving(agent.target), 20, "the agent to serve")
        client.launch(agent.target, pod(sh("main", "sleep 30")))
        assert client.status(agent.target).spot_notice is None
        assert agent.proc.alive()
    finally:
        client.close()
        agent.stop()


def sim_stub(agent: InProcessAgent) -> Callable[..., object]:
    stub = simulation_grpc.SimulationStub(agent.channel)
    return stub.SetApplicationState  # type: ignore[no-any-return]


def test_the_simulator_injects_a_notice_and_refuses_an_unknown_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    agent = InProcessAgent(tmp_path_factory.mktemp("sim"), simulation=True)
    try:
        agent.client.launch(agent.target, pod(sh("main", "sleep 30")))
        set_state = sim_stub(agent)
        state = set_state(
            simulation_pb2.SetApplicationStateRequest(spot_notice="rebalance"), metadata=agent.md, timeout=5
        )
        assert state.spot_notice == "rebalance"  # type: ignore[attr-defined]
        assert agent.client.status(agent.target).spot_notice.kind == "rebalance"  # type: ignore[union-attr]
        set_state(
            simulation_pb2.SetApplicationStateRequest(spot_notice="terminate"), metadata=agent.md, timeout=5
        )
        notice = agent.client.status(agent.target).spot_notice
        assert (
            notice is not None
            and (notice.kind, notice.action) == ("interruption", "terminate")
            and notice.time
        )
        with pytest.raises(grpc.RpcError) as err:
            set_state(
                simulation_pb2.SetApplicationStateRequest(spot_notice="evict"), metadata=agent.md, timeout=5
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert agent.client.status(agent.target).phase == "Running"
    finally:
        agent.stop()
