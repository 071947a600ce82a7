"""Probes on the real process runtime over gRPC: liveness restarts, readiness flips Ready, startup gates.

Every probe here runs each second (``periodSeconds: 1``), so each test takes a few seconds; the
workloads "hang" or recover when the test removes or creates a file their probe looks at.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.agent.conftest import InProcessAgent, pod, sh
from tests.support.services import free_port, wait_until
from vkec2.domain.agents import AppStatus


def _container(status: AppStatus, name: str = "app") -> dict[str, Any]:
    return next(c for c in status.container_statuses if c["name"] == name)


def _condition(status: AppStatus, kind: str) -> str:
    return next(str(c["status"]) for c in status.conditions if c["type"] == kind)


def _events(status: AppStatus, reason: str, prefix: str = "") -> list[dict[str, Any]]:
    return [e for e in status.events if e["reason"] == reason and e["message"].startswith(prefix)]


def _exec_probe(path: Path, **timing: int) -> dict[str, object]:
    return {"exec": {"command": ["test", "-f", str(path)]}, "periodSeconds": 1, **timing}


def test_a_hung_workload_fails_liveness_is_killed_restarted_and_reported(
    inproc_agent: InProcessAgent, tmp_path: Path
) -> None:
    a = inproc_agent
    alive = tmp_path / "alive"
    container = sh(
        "app",
        f"touch {alive}; exec sleep 600",
        livenessProbe=_exec_probe(alive, failureThreshold=2, terminationGracePeriodSeconds=1),
    )
    a.client.launch(a.target, pod(container))
    wait_until(lambda: alive.exists() and _container(a.client.status(a.target))["ready"], 10, "app ready")

    alive.unlink()  # the workload "hangs": its liveness check fails from now on

    def restarted() -> bool:
        return int(_container(a.client.status(a.target))["restartCount"]) >= 1

    wait_until(restarted, 15, "the container restarted after failing liveness")
    status = a.client.status(a.target)
    app = _container(status)
    assert app["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM, as a runtime reports it
    unhealthy = _events(status, "Unhealthy", "Liveness probe failed")
    killing = _events(status, "Killing")
    assert unhealthy and unhealthy[0]["type"] == "Warning" and unhealthy[0]["count"] >= 2  # aggregated
    assert [e["message"] for e in killing] == ["Container app failed liveness probe, will be restarted"]
    assert killing[0]["type"] == "Normal" and killing[0]["seq"] > unhealthy[0]["seq"]
    wait_until(lambda: _container(a.client.status(a.target))["ready"], 10, "the restarted app is ready")
    assert status.phase == "Running"


def test_liveness_failure_with_restart_policy_never_terminates(
    inproc_agent: InProcessAgent, tmp_path: Path
) -> None:
    a = inproc_agent
    container = sh("app", "exec sleep 600", livenessProbe=_exec_probe(tmp_path / "never", failureThreshold=1))
    a.client.launch(a.target, pod(container, restart_policy="Never"))
    wait_until(lambda: a.client.status(a.target).phase == "Failed", 15, "pod failed")
    status = a.client.status(a.target)
    app = _container(status)
    assert app["restartCount"] == 0 and app["state"]["terminated"]["exitCode"] == 143
    assert [e["message"] for e in _events(status, "Killing")] == ["Container app failed liveness probe"]


def test_a_probe_kill_restarts_under_on_failure_even_after_a_clean_exit(
    inproc_agent: InProcessAgent, tmp_path: Path
) -> None:
    a = inproc_agent
    script = "trap 'exit 0' TERM; while true; do sleep 0.1; done"  # exits 0 when told to stop
    container = sh("app", script, livenessProbe=_exec_probe(tmp_path / "never", failureThreshold=1))
    a.client.launch(a.target, pod(container, restart_policy="OnFailure"))

    def restarted() -> bool:
        return int(_container(a.client.status(a.target))["restartCount"]) >= 1

    wait_until(restarted, 15, "restarted although it exited 0")
    assert _container(a.client.status(a.target))["lastState"]["terminated"]["exitCode"] == 0


def test_readiness_flips_container_and_pod_ready_and_back(
    inproc_agent: InProcessAgent, tmp_path: Path
) -> None:
    a = inproc_agent
    port = free_port()
    (tmp_path / "ready").write_text("ok")
    container: dict[str, object] = {
        "name": "app",
        "image": "python",
        "command": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        "args": ["--directory", str(tmp_path)],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    }
    a.client.launch(a.target, pod(container))

    def ready_is(value: bool) -> bool:
        status = a.client.status(a.target)
        return status.phase == "Running" and _container(status)["ready"] is value

    wait_until(lambda: ready_is(True), 10, "ready once the readiness probe passes")
    assert _condition(a.client.status(a.target), "Ready") == "True"

    (tmp_path / "ready").unlink()
    wait_until(lambda: ready_is(False), 10, "NotReady once the probe fails")
    status = a.client.status(a.target)
    assert _condition(status, "Ready") == "False" and _condition(status, "ContainersReady") == "False"
    assert _events(status, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 404")
    assert _container(status)["restartCount"] == 0 and "running" in _container(status)["state"]

    (tmp_path / "ready").write_text("ok")
    wait_until(lambda: ready_is(True), 10, "Ready again once the probe passes")
    assert _condition(a.client.status(a.target), "Ready") == "True"


def test_startup_probe_gates_liveness(inproc_agent: InProcessAgent, tmp_path: Path) -> None:
    a = inproc_agent
    started, live = tmp_path / "started", tmp_path / "live"
    container = sh(
        "app",
        "exec sleep 600",
        startupProbe=_exec_probe(started, failureThreshold=60),
        livenessProbe=_exec_probe(live, failureThreshold=1, terminationGracePeriodSeconds=1),
    )
    a.client.launch(a.target, pod(container))

    def startup_failures() -> int:
        return sum(int(e["count"]) for e in _events(a.client.status(a.target), "Unhealthy", "Startup"))

    wait_until(lambda: startup_failures() >= 3, 10, "startup probe failing")
    status = a.client.status(a.target)
    app = _container(status)
    assert app["started"] is False and app["ready"] is False and app["restartCount"] == 0
    assert not _events(status, "Unhealthy", "Liveness")  # liveness waits for startup

    started.touch()  # started: now the (failing) liveness probe runs and restarts the container
    wait_until(lambda: bool(_events(a.client.status(a.target), "Killing")), 10, "liveness kill")
    status = a.client.status(a.target)
    assert _events(status, "Unhealthy", "Liveness probe failed")
    assert [e["message"] for e in _events(status, "Killing")] == [
        "Container app failed liveness probe, will be restarted"
    ]
