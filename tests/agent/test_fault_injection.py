"""The Simulation service on a real agent (``--enable-simulation``): forced reports and injected faults.

The simulator's own tests (test_simulator.py) cover the simulated runtime; here the same extension
(:class:`agent.sim.service.Simulation`: the service plus the fault-injecting interceptor) serves the
process runtime in-process, and a plain agent is shown to load no simulation code at all.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.v1 import simulation_pb2
from tests.agent.conftest import ROOT, InProcessAgent, fast_conn, pod, sh, simulation_grpc
from tests.support.services import wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentIdentityMismatch, AgentUnavailable

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def sim_agent(tmp_path: Path) -> Iterator[InProcessAgent]:
    a = InProcessAgent(tmp_path, simulation=True)
    yield a
    a.stop()


def _force(a: InProcessAgent, **fields: Any) -> Any:
    stub = simulation_grpc.SimulationStub(a.channel)
    request = simulation_pb2.SetApplicationStateRequest(**fields)
    return stub.SetApplicationState(request, metadata=a.md, timeout=5)


def _clear(a: InProcessAgent) -> Any:
    stub = simulation_grpc.SimulationStub(a.channel)
    return stub.ClearApplicationState(simulation_pb2.ClearApplicationStateRequest(), metadata=a.md, timeout=5)


def test_forced_states_over_the_process_runtime(sim_agent: InProcessAgent) -> None:
    a, c = sim_agent, sim_agent.client
    c.launch(a.target, pod(sh("main", "sleep 30")))
    wait_until(lambda: c.status(a.target).phase == "Running", 10, "running")

    state = _force(a, state=simulation_pb2.FORCED_STATE_FAILED, exit_code=3, message="disk on fire")
    assert state.state == simulation_pb2.FORCED_STATE_FAILED and state.exit_code == 3
    st = c.status(a.target)
    assert st.phase == "Failed" and st.message == "disk on fire" and st.reason == "SimulatedFailure"
    assert st.container_statuses[0]["state"]["terminated"]["exitCode"] == 3

    _force(a, state=simulation_pb2.FORCED_STATE_NOT_SERVING)
    assert not c.serving(a.target)
    with pytest.raises(AgentUnavailable, match="not serving"):
        c.status(a.target)
    # The instance check comes first: a call for another instance is refused as always.
    other = AgentClient(fast_conn(a.server.port))
    with pytest.raises(AgentIdentityMismatch):
        other.status(AgentTarget(a.endpoint, "i-someone-else"))
    other.close()

    _force(a, delay_ms=300)
    began = time.monotonic()
    assert c.status(a.target).phase == "Running"
    assert time.monotonic() - began >= 0.3

    _force(a, no_answer=True)
    slow = AgentClient(fast_conn(a.server.port, call_timeout_seconds=0.5))
    with pytest.raises(AgentUnavailable, match="DEADLINE_EXCEEDED"):
        slow.status(a.target)
    slow.close()

    assert _clear(a).state == simulation_pb2.FORCED_STATE_UNSPECIFIED
    assert c.status(a.target).phase == "Running"
    stub = simulation_grpc.SimulationStub(a.channel)
    with pytest.raises(grpc.RpcError) as err:
        request = simulation_pb2.SetRandomStatusRequest(enabled=True, seed=1)
        stub.SetRandomStatus(request, metadata=a.md, timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--runtime sim" in (err.value.details() or "")


def test_health_watch_follows_the_forced_state(sim_agent: InProcessAgent) -> None:
    a = sim_agent
    health: Any = health_pb2_grpc.HealthStub(a.channel)
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), metadata=a.md, timeout=20)
    assert next(stream).status == SERVING
    _force(a, state=simulation_pb2.FORCED_STATE_NOT_SERVING)
    assert next(stream).status == NOT_SERVING
    _clear(a)
    assert next(stream).status == SERVING
    stream.cancel()
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), metadata=a.md, timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_simulation_is_refused_without_enable_simulation(inproc_agent: InProcessAgent) -> None:
    stub = simulation_grpc.SimulationStub(inproc_agent.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSimulationState(
            simulation_pb2.GetSimulationStateRequest(), metadata=inproc_agent.md, timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_plain_agent_loads_no_simulation_code() -> None:
    probe = (
        "import sys; from agent.cli import build_parser, make_runtime; "
        "from agent.bootstrap import Identity; import pathlib, tempfile; "
        "args = build_parser().parse_args(['--instance-id', 'i-1']); "
        "make_runtime(args, Identity('i-1'), pathlib.Path(tempfile.mkdtemp())); "
        "print(sorted(m for m in sys.modules if m.startswith('agent.sim')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
