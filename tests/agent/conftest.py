"""Fixtures for the agent tests: real agent servers (subprocess or in-process) on free loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.bootstrap import Identity
from agent.runtime import Runtime
from agent.runtime_process import ProcessRuntime
from agent.server import AgentServer
from agent.service import Extension
from agent.sim.control import ControlledRuntime
from agent.sim.service import Simulation
from agent.v1 import agent_pb2_grpc as _agent_grpc
from agent.v1 import simulation_pb2_grpc as _simulation_grpc
from tests.support.services import ManagedProcess, free_port, port_open, wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.config import AgentConnection, Backoff
from vkec2.domain.agents import AgentTarget

ROOT = Path(__file__).resolve().parents[2]

# The generated gRPC modules are untyped; tests use them through Any.
agent_grpc: Any = _agent_grpc
simulation_grpc: Any = _simulation_grpc


def fast_conn(port: int, **kw: object) -> AgentConnection:
    """An AgentConnection that reconnects quickly, for tests."""
    return AgentConnection(
        port=port,
        endpoint=f"static:127.0.0.1:{port}",
        backoff=Backoff(base_delay_seconds=0.1, max_delay_seconds=0.5),
        connect_timeout_seconds=0.5,
        **kw,  # type: ignore[arg-type]
    )


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie is dead: only its parent's reaping is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class AgentProcess:
    """``python -m agent`` in its own process group on a free port."""

    def __init__(
        self, tmp: Path, *args: str, instance_id: str = "i-0123456789abcdef0", fixed_id: bool = True
    ) -> None:
        self.port = free_port()
        self.instance_id = instance_id
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = ManagedProcess(
            "agent",
            [
                sys.executable,
                "-m",
                "agent",
                "--listen",
                self.endpoint,
                *(["--instance-id", instance_id] if fixed_id else []),
                "--log-dir",
                str(tmp / f"logs-{self.port}"),
                *args,
            ],
            cwd=str(ROOT),
        ).start()
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), 20, "the agent to listen")
        assert self.proc.alive(), self.proc.output()

    @property
    def target(self) -> AgentTarget:
        return AgentTarget(self.endpoint, self.instance_id)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(*args: str, instance_id: str = "i-0123456789abcdef0", fixed_id: bool = True) -> AgentProcess:
        """An agent; with ``fixed_id=False`` its identity comes from an ``--identity-file`` in ``args``."""
        a = AgentProcess(tmp_path, *args, instance_id=instance_id, fixed_id=fixed_id)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


class InProcessAgent:
    """An :class:`AgentServer` with the process runtime inside the test process (insecure).

    With ``simulation`` it also serves the Simulation service and its fault injection."""

    def __init__(self, tmp: Path, instance_id: str = "i-inproc", simulation: bool = False) -> None:
        self.instance_id = instance_id
        self.runtime = ProcessRuntime(tmp / "logs", pod_ip="127.0.0.1", backoff_base=0.2, backoff_max=1.0)
        served: Runtime = self.runtime
        extension: Extension | None = None
        if simulation:  # as ``vkec2 agent --enable-simulation`` wires it
            served, extension = ControlledRuntime(self.runtime), Simulation()
        self.server = AgentServer(
            "127.0.0.1:0", Identity(instance_id), served, insecure=True, extension=extension
        )
        self.server.start()
        self.endpoint = self.server.address
        self.client = AgentClient(fast_conn(self.server.port))
        self.channel = grpc.insecure_channel(self.endpoint)

    @property
    def target(self) -> AgentTarget:
        return AgentTarget(self.endpoint, self.instance_id)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("x-vkec2-instance-id", self.instance_id),)

    def stop(self) -> None:
        self.client.close()
        self.channel.close()
        self.server.stop(0.5)


@pytest.fixture
def inproc_agent(tmp_path: Path) -> Iterator[InProcessAgent]:
    a = InProcessAgent(tmp_path)
    yield a
    a.stop()


def pod(
    *containers: dict[str, object],
    init: list[dict[str, object]] | None = None,
    restart_policy: str = "Always",
    name: str = "web",
    uid: str = "uid-1",
    annotations: dict[str, str] | None = None,
) -> dict[str, object]:
    spec: dict[str, object] = {"restartPolicy": restart_policy, "containers": list(containers)}
    if init:
        spec["initContainers"] = init
    meta: dict[str, object] = {"name": name, "namespace": "team", "uid": uid}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def sh(name: str, script: str, **extra: object) -> dict[str, object]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}
