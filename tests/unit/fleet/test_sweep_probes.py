"""The health sweep and probes: readiness and probe events reach the outbox, and never trigger a replacement.

On the fakes of ``conftest.py`` with a hand-moved clock (see ``test_sweep.py``): the agent reports
a NotReady container with probe events; the sweep copies the status into the record, appends one
outbox entry per new event (not again on the next pass), keeps the pod Running and Healthy, and
sends a status-only entry when the container is Ready again.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fakeagents import app_status
from tests.unit.fleet.test_sweep import Sweeper, condition
from tests.unit.fleet.world import World
from vkec2.contract import HEALTHY, STATUS_ONLY_EVENT
from vkec2.domain.agents import AppStatus
from vkec2.domain.appsync import last_forwarded, merge_agent_conditions, status_sync
from vkec2.domain.models import Phase


@pytest.fixture
def sweeper(world: World) -> Sweeper:
    return Sweeper(world)


def _status(ready: bool, events: list[dict[str, Any]] | None = None) -> AppStatus:
    status = "True" if ready else "False"
    st = app_status(
        "Running",
        containers=[{"name": "main", "ready": ready, "restartCount": 0, "state": {"running": {}}}],
        conditions=[
            {"type": "ContainersReady", "status": status, "lastTransitionTime": "t"},
            {"type": "Ready", "status": status, "lastTransitionTime": "t"},
        ],
    )
    st.events.extend(events or [])
    return st


def _unhealthy(seq: int, count: int = 1) -> dict[str, Any]:
    return {
        "seq": seq,
        "type": "Warning",
        "reason": "Unhealthy",
        "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
        "container": "main",
        "count": count,
    }


def test_readiness_failure_reaches_the_outbox_once_and_never_replaces(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running()
    world.agents.status_default = _status(True)
    sweeper.run()
    assert condition(world, "Ready") == "True"
    before = len(world.events)

    world.agents.status_default = _status(False, [_unhealthy(1, count=3)])
    for _ in range(world.settings.health.unhealthy_threshold + 2):
        report = sweeper.run()
        assert report.remediated == [] and report.unhealthy == []
    rec = world.rec
    assert rec.phase is Phase.RUNNING and rec.instance_id == inst["InstanceId"]
    assert condition(world, "Ready") == "False" and condition(world, HEALTHY) == "True"
    assert rec.container_statuses[0]["ready"] is False
    assert rec.agent_events == f"{inst['InstanceId']}:1"
    new = world.events[before:]
    assert [(e.reason, e.event_type) for e in new] == [("Unhealthy", "Warning")]  # once, not per pass
    assert new[0].message.endswith("statuscode: 503 (x3)")
    assert new[0].container_statuses[0]["ready"] is False

    world.agents.status_default = _status(True, [_unhealthy(1, count=3)])
    sweeper.run()
    [back] = world.events[before + 1 :]
    assert back.event_type == STATUS_ONLY_EVENT and condition(world, "Ready") == "True"
    writes = len(world.store.writes)
    sweeper.run()
    assert len(world.store.writes) == writes  # steady again: no write


def test_a_liveness_restart_with_killing_event_is_copied(sweeper: Sweeper) -> None:
    world = sweeper.world
    sweeper.running()
    restarted = _status(True)
    restarted.container_statuses[0].update(restartCount=1, lastState={"terminated": {"exitCode": 143}})
    killing = {"seq": 2, "type": "Normal", "reason": "Killing", "count": 1}
    killing["message"] = "Container main failed liveness probe, will be restarted"
    restarted.events.extend([_unhealthy(1), killing])
    world.agents.status_default = restarted
    sweeper.run()
    assert world.rec.container_statuses[0]["restartCount"] == 1
    assert [(e.reason, e.event_type) for e in world.events[-2:]] == [
        ("Unhealthy", "Warning"),
        ("Killing", "Normal"),
    ]


def test_status_sync_rules() -> None:
    assert last_forwarded("i-1:7", "i-1") == 7 and last_forwarded("i-1:7", "i-2") == 0
    assert last_forwarded("", "i-1") == 0
    fleet = {"type": "vkec2.io/InstanceReady", "status": "True"}
    merged = merge_agent_conditions(
        [fleet, {"type": "Ready", "status": "True"}],
        [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}, {"type": "X"}],
    )
    assert merged == [fleet, {"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]
    status = _status(True, [_unhealthy(n) for n in range(1, 15)])
    sync = status_sync([], [], "i-1:3", "i-1", status)
    assert sync is not None and sync.agent_events == "i-1:14"
    assert [e["seq"] for e in sync.events] == list(range(5, 15))  # at most 10 per pass, the newest
    same = status_sync(sync.conditions, sync.container_statuses, sync.agent_events, "i-1", status)
    assert same is None
    assert status_sync([], [], "i-1:14", "i-2", status) is not None  # a new instance: from its first event
