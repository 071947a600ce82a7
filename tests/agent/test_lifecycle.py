"""The process runtime end to end through a real agent process: statuses, phases, watch, terminate."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.agent.conftest import AgentProcess, fast_conn, pid_alive, pod, sh
from tests.support.services import wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.domain.agents import AppStatus


def _state(st: AppStatus, name: str, init: bool = False) -> dict[str, Any]:
    items = st.init_container_statuses if init else st.container_statuses
    return next(c for c in items if c["name"] == name)


def _cond(st: AppStatus, type_: str) -> str:
    return str(next(c for c in st.conditions if c["type"] == type_)["status"])


def test_init_then_one_exits_one_keeps_running(
    start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = start_agent("--insecure", "--pod-ip", "127.0.0.1")
    client = AgentClient(fast_conn(agent.port))
    t = agent.target
    gate = tmp_path / "gate"
    pids = tmp_path / "pids"
    spec = pod(
        sh("done", "echo done-output; exit 0"),
        sh(
            "server",
            f"trap 'exit 0' TERM; sleep 1000 & echo $! >> {pids}; echo $$$$ >> {pids}; "
            "while true; do sleep 0.05; done",
        ),
        init=[sh("init", f"echo init-waiting; while [ ! -f {gate} ]; do sleep 0.05; done")],
        restart_policy="OnFailure",
    )
    wait_until(lambda: client.serving(t), 10, "agent serving")

    watched: list[AppStatus] = []
    watch = client.watch(t)
    first = next(watch)
    assert first.phase == ""  # nothing launched yet

    def collect() -> None:
        for st in watch:
            watched.append(st)
            if st.phase == "Succeeded":
                return

    watcher = threading.Thread(target=collect, daemon=True)
    watcher.start()

    client.launch(t, spec)
    client.launch(t, spec)  # idempotent for the same pod UID

    # Step 1: the init container runs, app containers wait for it; the pod is Pending.
    wait_until(lambda: "running" in _state(client.status(t), "init", init=True)["state"], 10, "init running")
    st = client.status(t)
    assert st.phase == "Pending"
    assert _state(st, "done")["state"]["waiting"]["reason"] == "PodInitializing"
    assert _state(st, "server")["state"]["waiting"]["reason"] == "PodInitializing"
    assert _cond(st, "Initialized") == "False"
    assert _cond(st, "PodScheduled") == "True"

    # Step 2: the init container completes; 'done' exits 0 and stays down, 'server' keeps running.
    gate.touch()

    def settled() -> bool:
        s = client.status(t)
        return "terminated" in _state(s, "done")["state"] and "running" in _state(s, "server")["state"]

    wait_until(settled, 10, "done terminated and server running")
    st = client.status(t)
    assert st.phase == "Running"
    init = _state(st, "init", init=True)
    assert (
        init["state"]["terminated"]["exitCode"] == 0 and init["state"]["terminated"]["reason"] == "Completed"
    )
    done = _state(st, "done")
    assert done["state"]["terminated"] == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": done["state"]["terminated"]["startedAt"],
        "finishedAt": done["state"]["terminated"]["finishedAt"],
    }
    assert done["ready"] is False and done["restartCount"] == 0
    server = _state(st, "server")
    assert server["ready"] is True and server["started"] is True and server["state"]["running"]["startedAt"]
    assert _cond(st, "Initialized") == "True"
    assert _cond(st, "ContainersReady") == "False"
    assert _cond(st, "Ready") == "False"
    assert st.pod_ip == "127.0.0.1" and st.pod_uid == "uid-1"
    assert b"done-output" in b"".join(client.logs(t, "done"))
    assert b"init-waiting" in b"".join(client.logs(t, "init"))

    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 10, "server pids")
    recorded = [int(p) for p in pids.read_text().split()]
    assert all(pid_alive(p) for p in recorded)

    # Step 3: terminate; the server traps SIGTERM and exits 0, its background child goes with its group.
    started = time.monotonic()
    client.terminate(t, 10)
    assert time.monotonic() - started < 5
    st = client.status(t)
    assert st.phase == "Succeeded" and st.reason == "Terminated"
    assert _state(st, "server")["state"]["terminated"]["exitCode"] == 0
    wait_until(lambda: not any(pid_alive(p) for p in recorded), 5, "no process left")
    client.terminate(t, 10)  # idempotent

    watcher.join(10)
    phases = [s.phase for s in watched]
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"
    # One message per change: no two consecutive messages are the same status.
    for a, b in itertools.pairwise(watched):
        assert a != b
    client.close()


def test_crashing_container_backs_off(start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent("--insecure", "--restart-backoff", "0.2", "--restart-backoff-max", "1")
    client = AgentClient(fast_conn(agent.port))
    t = agent.target
    client.launch(t, pod(sh("crash", "echo attempt; exit 3")))

    def backing_off() -> bool:
        c = _state(client.status(t), "crash")
        return bool(
            c["restartCount"] >= 2 and c["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
        )

    wait_until(backing_off, 20, "CrashLoopBackOff")
    st = client.status(t)
    c = _state(st, "crash")
    assert c["lastState"]["terminated"]["exitCode"] == 3
    assert c["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off" in c["state"]["waiting"]["message"]
    assert st.phase == "Running"  # restartPolicy Always: the kubelet reports Running while it restarts
    assert b"attempt" in b"".join(client.logs(t, "crash", previous=True))
    client.terminate(t, 1)
    client.close()


def test_crash_with_never_fails_the_pod(start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent("--insecure")
    client = AgentClient(fast_conn(agent.port))
    t = agent.target
    client.launch(t, pod(sh("once", "exit 4"), restart_policy="Never"))
    wait_until(lambda: client.status(t).phase == "Failed", 10, "pod Failed")
    c = _state(client.status(t), "once")
    assert c["state"]["terminated"]["exitCode"] == 4 and c["restartCount"] == 0
    client.close()


def test_terminate_kills_every_group_within_grace(
    start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = start_agent("--insecure")
    client = AgentClient(fast_conn(agent.port))
    t = agent.target
    pids = tmp_path / "pids"
    stubborn = (
        f"trap '' TERM; (trap '' TERM; sleep 1000) & echo $! >> {pids}; echo $$$$ >> {pids}; "
        "while true; do sleep 0.05; done"
    )
    client.launch(
        t, pod(sh("a", stubborn), sh("b", stubborn), sh("c", f"echo $$$$ >> {pids}; exec sleep 1000"))
    )
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 5, 10, "all processes started")
    recorded = [int(p) for p in pids.read_text().split()]
    assert all(pid_alive(p) for p in recorded)

    started = time.monotonic()
    client.terminate(t, 1)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 4, elapsed
    wait_until(lambda: not any(pid_alive(p) for p in recorded), 3, "every process group gone")
    st = client.status(t)
    assert st.phase == "Failed"
    codes = {c["name"]: c["state"]["terminated"]["exitCode"] for c in st.container_statuses}
    assert codes == {"a": 137, "b": 137, "c": 143}
    assert "SIGKILL" in st.message
    client.close()
