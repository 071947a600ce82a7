"""The remediation breaker and beat liveness end to end: real workers and beat, Redis, moto, the simulator.

A partition between the workers and every agent (the simulator's ``--partition-file``: every
lifecycle and health call refused UNAVAILABLE) while 50 pods run and EC2 reports their instances
running replaces nothing: the breaker opens (in Redis, as the worker that saw it), the pods turn
Healthy Unknown, and when the partition ends they are Healthy again and the breaker closes. The
partition here lasts a few sweep passes; the chaos suite holds it for 60 s the same way (see
docs/maintenance.md). Beat liveness: with a beat running the fleet's BeatMissing condition is False;
after the beat is stopped (by PID) and ``beat.liveness_seconds`` has passed it is True; a new beat
clears it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.node import Health, conditions
from tests.maintenance.conftest import Make, run_task
from tests.maintenance.test_health_sweep import seed_running_pods
from tests.support.fleet import FleetHarness
from tests.support.services import wait_until
from vkec2.cli.procs import start_agent_sim
from vkec2.contract import BEAT_MISSING, HEALTHY, REMEDIATION_PAUSED
from vkec2.domain.models import Phase
from vkec2.fleet.breaker import fleet_signals

SWEEP = "vkec2.health.sweep"
PODS = 50


@pytest.fixture
def partitioned_sim(moto_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A simulator of its own (the partition would cut every test's agents): HOST:PORT, switch file."""
    switch = tmp_path / "partition"
    proc, endpoint = start_agent_sim(moto_url, extra_args=["--partition-file", str(switch)])
    yield endpoint, switch
    proc.stop()


def healthy(fleet: FleetHarness, uids: list[str]) -> set[tuple[str, str]]:
    out = set()
    for uid in uids:
        cond = next((c for c in fleet.record(uid).conditions if c["type"] == HEALTHY), None)
        out.add((str(cond["status"]), str(cond["reason"])) if cond else ("-", "-"))
    return out


def checking_passes(fleet: FleetHarness, count: int) -> list[dict[str, Any]]:
    """The results of the next ``count`` sweep passes that checked agents (a pass within half an
    interval of the last finds no pod due)."""
    results: list[dict[str, Any]] = []
    for _ in range(20 * count):
        result = run_task(fleet, SWEEP)
        if result["checked"]:
            results.append(result)
        if len(results) == count:
            return results
    raise AssertionError(f"fewer than {count} sweep passes checked agents: {results}")


def test_a_partition_between_workers_and_every_agent_replaces_nothing(
    make_fleet: Make, partitioned_sim: tuple[str, Path]
) -> None:
    endpoint, switch = partitioned_sim
    fleet = make_fleet(
        health={"interval_seconds": 0.4, "unhealthy_threshold": 2, "unknown_threshold": 3},
        agent={
            "endpoint": f"static:{endpoint}",
            "backoff": {"base_delay_seconds": 0.05, "max_delay_seconds": 0.2},
        },
    )
    uids = seed_running_pods(fleet, endpoint, PODS)
    instances = {fleet.record(u).instance_id for u in uids}
    fleet.start_worker(concurrency=2, queues="health,pods")
    assert checking_passes(fleet, 1)[0]["checked"] == PODS

    switch.write_text("refuse")
    results = checking_passes(fleet, 6)  # three times the unhealthy threshold
    assert [r["remediated"] for r in results] == [0] * 6, results
    assert results[-1]["breaker_open"] and results[-1]["paused"] == PODS, results[-1]
    breaker = fleet.store.remediation_breaker()
    assert (breaker.open, breaker.scope, breaker.reason) == (True, "worker", "WorkerCannotReachAgents")
    assert breaker.worker and "cannot reach the agents" in breaker.message
    assert healthy(fleet, uids) == {("Unknown", "WorkerCannotReachAgents")}
    assert all(
        fleet.record(u).phase is Phase.RUNNING and fleet.record(u).instance_id in instances for u in uids
    )
    live = fleet.ec2.describe_instances(InstanceIds=sorted(instances))
    states = {i["State"]["Name"] for r in live["Reservations"] for i in r["Instances"]}
    assert states == {"running"}

    switch.unlink()

    def recovered() -> bool:
        run_task(fleet, SWEEP)
        return healthy(fleet, uids) == {("True", "Healthy")} and not fleet.store.remediation_breaker().open

    wait_until(recovered, 120, "the pods to be Healthy again and the breaker to close", interval=0)
    assert {fleet.record(u).instance_id for u in uids} == instances  # nothing was replaced


def node_condition(fleet: FleetHarness, kind: str) -> dict[str, str]:
    """The node condition ``kind`` as the producer would write it from the fleet's store."""
    signals = fleet_signals(fleet.store, fleet.settings.beat_liveness_seconds())
    return next(c for c in conditions(Health(True, "KubeletReady", ""), None, signals) if c["type"] == kind)


def test_beat_missing_appears_when_beat_stops_and_clears_when_one_runs(make_fleet: Make) -> None:
    fleet = make_fleet(
        health={"interval_seconds": 1},
        beat={"lock_timeout_seconds": 2, "max_loop_interval_seconds": 1.0, "liveness_seconds": 3},
        quotas={"enabled": False},
    )
    fleet.start_worker(concurrency=2)
    beat = fleet.start_beat()
    wait_until(lambda: fleet.store.beat_signals().lock_held, 30, "the beat to hold its lock")
    wait_until(lambda: fleet.store.beat_signals().last_run > 0, 30, "a periodic task sent by the beat")
    assert node_condition(fleet, BEAT_MISSING)["status"] == "False"

    beat.stop()  # by its PID
    wait_until(
        lambda: node_condition(fleet, BEAT_MISSING)["status"] == "True", 60, "BeatMissing to turn True"
    )
    assert "no periodic task ran" in node_condition(fleet, BEAT_MISSING)["message"]

    fleet.start_beat()
    wait_until(lambda: node_condition(fleet, BEAT_MISSING)["status"] == "False", 60, "BeatMissing to clear")
    assert node_condition(fleet, REMEDIATION_PAUSED)["status"] == "False"
