"""Process runtime details over real gRPC: environment, logs (tail, follow, since, limits), exec, bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.bootstrap import Identity
from agent.runtime_process import ProcessRuntime
from agent.server import AgentServer
from agent.v1 import agent_pb2
from tests.agent.conftest import InProcessAgent, agent_grpc, fast_conn, pod, sh
from tests.support.services import wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentRejected


def _terminated(agent: InProcessAgent, name: str) -> bool:
    st = agent.client.status(agent.target)
    return any(c["name"] == name and "terminated" in c["state"] for c in st.container_statuses)


def _running(agent: InProcessAgent, name: str) -> bool:
    st = agent.client.status(agent.target)
    return any(c["name"] == name and "running" in c["state"] for c in st.container_statuses)


def test_env_field_refs_expansion_and_working_dir(inproc_agent: InProcessAgent, tmp_path: Path) -> None:
    a = inproc_agent
    workdir = tmp_path / "work" / "dir"
    c: dict[str, object] = {
        "name": "env",
        "image": "ignored",
        "command": ["sh", "-c"],
        "args": ['echo "$GREETING|$POD|$NS|$UID_|$IP|$TEAM|$(GREETING)"; pwd'],
        "workingDir": str(workdir),
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID_", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TEAM", "value": "$(NS)-x"},
        ],
    }
    a.client.launch(a.target, pod(c, restart_policy="Never"))
    wait_until(lambda: _terminated(a, "env"), 10, "env container done")
    out = b"".join(a.client.logs(a.target, "env")).decode()
    assert out == f"hello|web|team|uid-1|127.0.0.1|team-x|hello\n{workdir}\n"
    assert a.client.status(a.target).phase == "Succeeded"


def test_logs_tail_timestamps_since_limit_and_stderr(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    a.client.launch(
        a.target,
        pod(
            sh("count", "for i in $(seq 1 100); do echo line-$i; done"),
            sh("errs", "echo oops >&2"),
            restart_policy="Never",
        ),
    )
    wait_until(lambda: _terminated(a, "count") and _terminated(a, "errs"), 10, "containers done")
    assert b"".join(a.client.logs(a.target, "errs")) == b"oops\n"
    t = a.target
    everything = b"".join(a.client.logs(t, "count")).decode().splitlines()
    assert everything == [f"line-{i}" for i in range(1, 101)]
    assert b"".join(a.client.logs(t, "count", tail_lines=2)) == b"line-99\nline-100\n"
    assert b"".join(a.client.logs(t, "count", tail_lines=0)) == b""
    stamped = b"".join(a.client.logs(t, "count", tail_lines=1, timestamps=True)).decode()
    ts, text = stamped.split(" ", 1)
    assert text == "line-100\n" and ts.endswith("Z") and "T" in ts
    assert len(b"".join(a.client.logs(t, "count", since_seconds=3600)).splitlines()) == 100
    limited = b"".join(a.client.logs(t, "count", limit_bytes=12))
    assert len(limited) == 12 and limited in b"\n".join(x.encode() for x in everything)
    # Without a container name, a pod with two containers is ambiguous.
    with pytest.raises(AgentRejected, match="choose one of"):
        b"".join(a.client.logs(t, ""))


def test_logs_follow_streams_until_the_container_exits(inproc_agent: InProcessAgent, tmp_path: Path) -> None:
    a = inproc_agent
    gate = tmp_path / "gate"
    a.client.launch(
        a.target,
        pod(
            sh("talker", f"echo first; while [ ! -f {gate} ]; do sleep 0.05; done; echo second; exit 0"),
            restart_policy="Never",
        ),
    )
    wait_until(lambda: _running(a, "talker"), 10, "talker running")
    stream = a.client.logs(a.target, "talker", follow=True)
    received = next(stream)
    while b"first" not in received:
        received += next(stream)
    gate.touch()
    received += b"".join(stream)  # ends by itself when the container exits
    assert received == b"first\nsecond\n"


def test_log_files_are_size_bounded(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    runtime = ProcessRuntime(logs, max_log_bytes=64 * 1024)
    server = AgentServer("127.0.0.1:0", Identity("i-bound"), runtime, insecure=True)
    server.start()
    client = AgentClient(fast_conn(server.port))
    target = AgentTarget(server.address, "i-bound")
    try:
        client.launch(
            target,
            pod(
                sh(
                    "chatty", "i=0; while [ $i -lt 20000 ]; do echo line-$i-padding-padding; i=$((i+1)); done"
                ),
                restart_policy="Never",
            ),
        )

        def done() -> bool:
            st = client.status(target)
            return "terminated" in st.container_statuses[0]["state"]

        wait_until(done, 30, "chatty done")
        total = sum(p.stat().st_size for p in logs.rglob("*") if p.is_file())
        assert total <= 2 * 64 * 1024 + 4096, total
        tail = b"".join(client.logs(target, "chatty", tail_lines=2))
        assert tail == b"line-19998-padding-padding\nline-19999-padding-padding\n"
    finally:
        client.close()
        server.stop(0.5)


def _exec(a: InProcessAgent, requests: list[Any]) -> tuple[bytes, bytes, int | None]:
    stub = agent_grpc.ApplicationLifecycleStub(a.channel)
    out, err, code = b"", b"", None
    for resp in stub.Exec(iter(requests), metadata=a.md, timeout=20):
        kind = resp.WhichOneof("msg")
        if kind == "stdout":
            out += resp.stdout
        elif kind == "stderr":
            err += resp.stderr
        else:
            code = resp.exit_code
    return out, err, code


def test_exec_stdin_stdout_stderr_exit_code_and_tty(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    a.client.launch(
        a.target,
        pod(
            sh("main", "while true; do sleep 0.1; done"),
            {"name": "side", "command": ["sleep", "1000"], "env": [{"name": "X", "value": "42"}]},
        ),
    )
    wait_until(lambda: _running(a, "main") and _running(a, "side"), 10, "containers running")

    start = agent_pb2.ExecStart(container="main", command=["cat"], stdin=True)
    out, err, code = _exec(
        a,
        [
            agent_pb2.ExecRequest(start=start),
            agent_pb2.ExecRequest(stdin=b"hello "),
            agent_pb2.ExecRequest(stdin=b"exec\n"),
            agent_pb2.ExecRequest(close_stdin=True),
        ],
    )
    assert (out, err, code) == (b"hello exec\n", b"", 0)

    start = agent_pb2.ExecStart(container="side", command=["sh", "-c", "echo $X; echo bad >&2; exit 7"])
    assert _exec(a, [agent_pb2.ExecRequest(start=start)]) == (b"42\n", b"bad\n", 7)

    start = agent_pb2.ExecStart(container="main", command=["sh", "-c", "stty size"], tty=True, stdin=True)
    out, _, code = _exec(
        a,
        [
            agent_pb2.ExecRequest(start=start),
            agent_pb2.ExecRequest(resize=agent_pb2.TerminalSize(width=100, height=30)),
        ],
    )
    # The resize may land before or after stty runs; the tty itself must be there.
    assert code == 0 and out.strip() in (b"30 100", b"0 0"), out

    via_client = list(
        a.client.exec_stream(a.target, "main", ["sh", "-c", "read x; echo got-$x"], stdin=[b"value\n"])
    )
    assert via_client == [("stdout", b"got-value\n"), ("exit", 0)]
    a.client.terminate(a.target, 2)


def test_exec_refused_for_stopped_container(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    a.client.launch(a.target, pod(sh("quick", "exit 0"), restart_policy="Never"))
    wait_until(lambda: _terminated(a, "quick"), 10, "quick done")
    start = agent_pb2.ExecStart(container="quick", command=["true"])
    with pytest.raises(grpc.RpcError) as info:
        _exec(a, [agent_pb2.ExecRequest(start=start)])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not running" in (info.value.details() or "")


def test_status_is_kubernetes_json(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    a.client.launch(a.target, pod(sh("main", "sleep 1000")))
    wait_until(lambda: _running(a, "main"), 10, "running")
    st = a.client.status(a.target)
    doc = {"phase": st.phase, "conditions": st.conditions, "containerStatuses": st.container_statuses}
    json.dumps(doc)  # serialisable as is
    c = st.container_statuses[0]
    assert set(c) >= {"name", "ready", "restartCount", "state", "lastState", "image", "containerID"}
    assert c["image"] == "busybox" and c["containerID"].startswith("process://")
    assert {x["type"] for x in st.conditions} == {"PodScheduled", "Initialized", "ContainersReady", "Ready"}
    assert st.start_time is not None
    a.client.terminate(a.target, 2)
