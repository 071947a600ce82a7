"""Helpers for the fleet-maintenance tests: run a periodic task on a real worker and await its result,
drive the agent simulator's forced states, and the Service Quotas fake."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from agent.v1 import simulation_pb2, simulation_pb2_grpc
from tests.fleet.conftest import ec2_proxy, make_fleet  # the fleet fixtures, shared
from tests.support.fleet import FleetHarness
from tests.support.quotas_fake import QuotasFake
from tests.support.services import wait_until

Make = Callable[..., FleetHarness]
__all__ = ["ec2_proxy", "make_fleet"]

#: Short periods so a test sees many of them (seconds).
FAST = {
    "health": {
        "interval_seconds": 0.2,
        "unhealthy_threshold": 3,
        "unknown_threshold": 4,
        "flapping_window_seconds": 60,
        "flapping_count": 4,
    },
    "agent": {"backoff": {"base_delay_seconds": 0.05, "max_delay_seconds": 0.2}},
}


def run_task(fleet: FleetHarness, name: str, timeout: float = 60, **kwargs: Any) -> Any:
    """Send a periodic task by name to the worker and return the result it recorded."""
    started = time.time()
    fleet.send(name, **kwargs)
    return wait_result(fleet, name, started, timeout)


def _ran(result: Any) -> bool:
    """False for a run that found another run of the same task in progress (single-flight)."""
    items = result if isinstance(result, list) else [result]
    return not any(isinstance(r, dict) and r.get("skipped") is True for r in items)


def wait_result(fleet: FleetHarness, name: str, after: float, timeout: float = 60) -> Any:
    """The result of the first run of ``name`` finished after ``after`` that was not skipped.

    A run can be skipped when the broker redelivers a long task (visibility timeout) while the
    first delivery still runs; the single-flight lock makes the copy a no-op.
    """
    key = fleet.store.keys.maintenance_last(name)
    found: dict[str, Any] = {}

    def done() -> bool:
        raw = fleet.store.redis.hgetall(key)
        if raw and float(raw["ts"]) > after and _ran(json.loads(raw["result"])):
            found["result"] = json.loads(raw["result"])
            return True
        return False

    try:
        wait_until(done, timeout, f"{name} to finish", interval=0.05)
    except TimeoutError:
        logs = "\n".join(w.output()[-3000:] for w in fleet.workers)
        raise AssertionError(f"{name} did not finish within {timeout}s\n{logs}") from None
    return found["result"]


class SimControl:
    """Force what the simulated agent of an instance answers."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.stub: Any = simulation_pb2_grpc.SimulationStub(self.channel)  # type: ignore[no-untyped-call]

    def force(self, instance_id: str, state: Any, **kwargs: Any) -> None:
        self.stub.SetApplicationState(
            simulation_pb2.SetApplicationStateRequest(state=state, **kwargs),
            metadata=(("x-vkec2-instance-id", instance_id),),
            timeout=10,
        )

    def clear(self, instance_id: str) -> None:
        self.stub.ClearApplicationState(
            simulation_pb2.ClearApplicationStateRequest(),
            metadata=(("x-vkec2-instance-id", instance_id),),
            timeout=10,
        )

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def sim(agent_sim: str) -> Iterator[SimControl]:
    control = SimControl(agent_sim)
    yield control
    control.close()


@pytest.fixture
def quotas_fake() -> Iterator[QuotasFake]:
    fake = QuotasFake({("ec2", "L-1216C47A"): 96.0}).start()
    yield fake
    fake.stop()
