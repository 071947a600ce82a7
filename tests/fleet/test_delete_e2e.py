"""End to end: a delete never holds a worker, a grace period is capped, a finished Job releases its instance.

Real Celery workers, Redis, moto behind the counting proxy and the agent simulator, as in
``test_lifecycle_e2e.py``. The simulator's ``sim.vkec2.io/ignore-sigterm`` annotation makes a
workload that only dies at the end of its grace period, the case that used to pin a worker thread
for the whole grace period of every such delete.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.contract import INSTANCE_READY
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
STUBBORN = {"sim.vkec2.io/ignore-sigterm": "true"}


def _stubborn_pod(name: str, grace: float) -> dict[str, object]:
    pod = example_pod(name, annotations=STUBBORN)
    pod["spec"]["terminationGracePeriodSeconds"] = grace
    return pod


def _time_to_running(fleet: FleetHarness, name: str) -> float:
    t0 = time.monotonic()
    uid = fleet.submit(example_pod(name))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    return time.monotonic() - t0


def test_deletes_within_long_grace_periods_do_not_delay_a_create(make_fleet: Make) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    uids = [fleet.submit(_stubborn_pod(f"stubborn-{i}", 3600)) for i in range(16)]
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=180)
    baseline = _time_to_running(fleet, "baseline")

    for uid in uids:
        fleet.delete(uid)
    wait_until(lambda: all(fleet.record(u).phase is Phase.TERMINATING for u in uids), 60, "Terminating")
    after = _time_to_running(fleet, "after-deletes")
    print(f"\ncreate -> Running: {baseline:.2f}s alone, {after:.2f}s after 16 deletes in a 3,600 s grace")
    assert after < 2 * baseline + 5

    now = time.time()
    for uid in uids:
        rec = fleet.record(uid)
        assert rec.phase is Phase.TERMINATING and now + 3500 < rec.grace_deadline <= now + 3600
    assert sorted(fleet.instances_by_uid()) != [], "the workloads still use their grace period"

    # The delete re-schedules itself by countdown: its next step changes while it waits.
    first = fleet.record(uids[0]).next_task
    wait_until(lambda: fleet.record(uids[0]).next_task != first, 30, "the delete's next poll")
    assert fleet.record(uids[0]).phase is Phase.TERMINATING


def test_a_huge_grace_period_is_capped_and_the_instance_terminated(make_fleet: Make) -> None:
    fleet = make_fleet(agent={"max_grace_seconds": 3})
    fleet.start_worker(concurrency=2)
    uid = fleet.submit(_stubborn_pod("huge-grace", 1e16))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    instance_id = fleet.record(uid).instance_id

    generation = fleet.store.mark_deleted(uid, 1e16)  # kubectl delete --grace-period=1e16
    fleet.send("vkec2.pods.delete", uid=uid, generation=generation)
    wait_until(lambda: fleet.record(uid).phase is Phase.TERMINATING, 30, "Terminating")
    rec = fleet.record(uid)
    assert rec.grace_deadline <= time.time() + 3
    fleet.wait_phase([uid], {Phase.TERMINATED}, timeout=60)
    assert fleet.instances_by_uid() == {}
    assert instance_id in fleet.record(uid).message


def test_a_finished_job_releases_its_instance_and_stays_succeeded(make_fleet: Make) -> None:
    fleet = make_fleet(agent={"finished_keepalive_seconds": 2})
    fleet.start_worker(concurrency=2)
    job = example_pod(
        "job",
        restart_policy="Never",
        annotations={"sim.vkec2.io/run-seconds": "1", "sim.vkec2.io/exit-code": "0"},
    )
    uid = fleet.submit(job)
    fleet.wait_phase([uid], {Phase.SUCCEEDED}, timeout=120)
    instance_id = fleet.record(uid).instance_id

    wait_until(lambda: fleet.instances_by_uid() == {}, 60, "the finished pod's instance to be terminated")
    wait_until(lambda: fleet.record(uid).released_at > 0, 30, "the release to be recorded")
    rec = fleet.record(uid)
    assert rec.phase is Phase.SUCCEEDED and not rec.deleted
    assert rec.container_statuses, "the pod keeps its statuses"
    ready = next(c for c in rec.conditions if c["type"] == INSTANCE_READY)
    assert (ready["status"], ready["reason"]) == ("False", "InstanceReleased")
    assert instance_id in ready["message"]
