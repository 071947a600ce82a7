"""Malformed and misdirected requests get clear gRPC errors, and the agent keeps serving afterwards."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.v1 import agent_pb2
from tests.agent.conftest import InProcessAgent, agent_grpc, pod, sh
from tests.support.services import free_port, wait_until
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentIdentityMismatch, AgentRejected


def _refused(a: InProcessAgent, call: Callable[[Any], Any], code: grpc.StatusCode, words: str) -> None:
    stub = agent_grpc.ApplicationLifecycleStub(a.channel)
    with pytest.raises(grpc.RpcError) as info:
        result = call(stub)
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or ""), info.value.details()
    # ... and the agent is still serving.
    resp = health_pb2_grpc.HealthStub(a.channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def _launch(a: InProcessAgent, body: str) -> Callable[[Any], Any]:
    return lambda stub: stub.LaunchApplication(
        agent_pb2.LaunchApplicationRequest(pod_json=body), metadata=a.md, timeout=5
    )


BAD_PODS = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"kind": "Service", "metadata": {"name": "x"}, "spec": {}}), "expected 'Pod'"),
    (json.dumps({"metadata": {"name": "x"}}), "spec is missing"),
    (json.dumps({"metadata": {"name": "x"}, "spec": {"containers": []}}), "non-empty list"),
    (json.dumps(pod(sh("a", "true"), sh("a", "true"))), "used twice"),
    (json.dumps(pod({"name": "Bad_Name", "command": ["true"]})), "DNS label"),
    (json.dumps(pod({"name": "a", "image": "nginx"})), "has no command"),
    (json.dumps(pod(sh("a", "true"), restart_policy="Sometimes")), "restartPolicy"),
    (
        json.dumps(
            pod(
                {
                    "name": "a",
                    "command": ["true"],
                    "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                }
            )
        ),
        "the reference was not resolved",
    ),
    (
        json.dumps(
            pod(
                {
                    "name": "a",
                    "command": ["true"],
                    "env": [{"name": "S", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}],
                }
            )
        ),
        "not supported",
    ),
    (json.dumps(pod({"name": "a", "command": "true"})), "list of strings"),
]


@pytest.mark.parametrize(("body", "words"), BAD_PODS)
def test_invalid_pods_are_refused(inproc_agent: InProcessAgent, body: str, words: str) -> None:
    _refused(inproc_agent, _launch(inproc_agent, body), grpc.StatusCode.INVALID_ARGUMENT, words)


def test_bad_calls_on_a_running_pod(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    a.client.launch(a.target, pod(sh("main", "sleep 1000"), uid="uid-1"))
    wait_until(lambda: "running" in a.client.status(a.target).container_statuses[0]["state"], 10, "running")
    md = a.md
    _refused(
        a,
        lambda s: s.TerminateApplication(
            agent_pb2.TerminateApplicationRequest(grace_seconds=-1), metadata=md, timeout=5
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "grace_seconds must be >= 0",
    )
    _refused(
        a,
        lambda s: s.GetLogs(agent_pb2.GetLogsRequest(container="nope"), metadata=md, timeout=5),
        grpc.StatusCode.NOT_FOUND,
        "container 'nope' is not in pod web",
    )
    _refused(
        a,
        lambda s: s.GetLogs(
            agent_pb2.GetLogsRequest(container="main", tail_lines=-5), metadata=md, timeout=5
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tail_lines must be positive",
    )
    _refused(
        a,
        lambda s: s.GetLogs(
            agent_pb2.GetLogsRequest(container="main", previous=True), metadata=md, timeout=5
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "previous terminated",
    )
    start = agent_pb2.ExecRequest(start=agent_pb2.ExecStart(container="nope", command=["true"]))
    _refused(
        a,
        lambda s: s.Exec(iter([start]), metadata=md, timeout=5),
        grpc.StatusCode.NOT_FOUND,
        "container 'nope'",
    )
    empty = agent_pb2.ExecRequest(start=agent_pb2.ExecStart(container="main"))
    _refused(
        a,
        lambda s: s.Exec(iter([empty]), metadata=md, timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs a command",
    )
    stdin_first = agent_pb2.ExecRequest(stdin=b"x")
    _refused(
        a,
        lambda s: s.Exec(iter([stdin_first]), metadata=md, timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "first Exec message must be 'start'",
    )
    other = json.dumps(pod(sh("main", "true"), uid="uid-2"))
    _refused(a, _launch(a, other), grpc.StatusCode.FAILED_PRECONDITION, "already running")
    # Instance identity: missing and wrong IDs are refused.
    _refused(
        a,
        lambda s: s.CheckApplicationHealth(agent_pb2.CheckApplicationHealthRequest(), timeout=5),
        grpc.StatusCode.PERMISSION_DENIED,
        "missing x-vkec2-instance-id",
    )
    _refused(
        a,
        lambda s: s.CheckApplicationHealth(
            agent_pb2.CheckApplicationHealthRequest(),
            metadata=(("x-vkec2-instance-id", "i-wrong"),),
            timeout=5,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "instance ID mismatch: this agent runs on i-inproc",
    )
    # The same refusals through the fleet client, as fleet errors.
    with pytest.raises(AgentRejected, match="grace_seconds"):
        a.client.terminate(a.target, -3)
    with pytest.raises(AgentIdentityMismatch, match="mismatch"):
        a.client.status(AgentTarget(a.endpoint, "i-wrong"))
    with pytest.raises(AgentRejected, match="is not in pod"):
        list(a.client.logs(a.target, "nope"))
    assert a.client.status(a.target).phase == "Running"
    a.client.terminate(a.target, 2)


def test_calls_before_launch(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    st = a.client.status(a.target)
    assert (st.phase, st.reason) == ("", "NotLaunched")
    with pytest.raises(AgentRejected, match="no pod has been launched"):
        list(a.client.logs(a.target, "main"))
    a.client.terminate(a.target, 1)  # nothing to stop: fine
    assert a.client.serving(a.target)


def test_port_forward_refuses_bad_ports_and_pipes_a_loopback_port(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    md = a.md

    def forward(port: int) -> Callable[[Any], Any]:
        start = agent_pb2.PortForwardRequest(start=agent_pb2.PortForwardStart(port=port))
        return lambda s: s.PortForward(iter([start]), metadata=md, timeout=5)

    for port in (0, -5, 65536):
        _refused(a, forward(port), grpc.StatusCode.INVALID_ARGUMENT, "port must be between 1 and 65535")
    data_first = agent_pb2.PortForwardRequest(data=b"x")
    _refused(
        a,
        lambda s: s.PortForward(iter([data_first]), metadata=md, timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "first PortForward message must be 'start'",
    )
    closed = free_port()
    with pytest.raises(AgentRejected, match=f"cannot connect to port {closed} on the instance"):
        a.client.port_forward(a.target, closed, [])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"pong:" + conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    out = a.client.port_forward(a.target, listener.getsockname()[1], [b"ping"])
    assert b"".join(out) == b"pong:ping"
    listener.close()
