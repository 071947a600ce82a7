"""Lost pod work resumes in seconds: workers SIGKILLed mid-create, and spurious resumes that change nothing.

A worker killed with SIGKILL takes the messages it held with it (its scheduled next steps, a message
taken off the queue but not yet recorded as unacknowledged); with the broker's default visibility
timeout (600 s) they would come back after ten minutes. Here the due times of the pods' steps and
``vkec2.maintenance.resume`` (beat, every second) carry every pod to Running, and the health
sweep's backstop is out of reach (its interval is longer than the test). A resume that publishes a
step which was not lost (a pass with its clock far ahead) makes two deliveries of the same step:
the later one exits as superseded and every pod still gets exactly one instance.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.contract import POD_CREATE, pod_task_kwargs
from vkec2.domain.models import Phase
from vkec2.fleet.resume import Resume

Make = Callable[..., FleetHarness]

PODS = 40
KILLS = 3

#: The fleet as deployed as far as lost messages go: the broker restores them after ten minutes, the
#: health sweep resumes a silent chain after minutes; due times and the resume task after seconds.
RESUMING = {
    "celery": {"visibility_timeout_seconds": 600, "resume_slack_seconds": 3},
    "beat": {"resume_interval_seconds": 1},
    "health": {"interval_seconds": 600},
}


def one_instance_each(fleet: FleetHarness, uids: list[str]) -> None:
    by_uid = fleet.instances_by_uid()
    assert sorted(by_uid) == sorted(uids), "an instance without a pod, or a pod without one"
    assert {u: ids for u, ids in by_uid.items() if len(ids) > 1} == {}
    assert all(fleet.record(u).instance_id == by_uid[u][0] for u in uids)


def test_three_workers_killed_during_40_creates_every_pod_reaches_running(make_fleet: Make) -> None:
    fleet = make_fleet(**RESUMING)
    fleet.start_beat()
    workers = [fleet.start_worker(concurrency=4) for _ in range(KILLS + 1)]
    uids = [fleet.submit(example_pod(f"kill-{i}")) for i in range(PODS)]

    def in_flight() -> bool:
        return sum(fleet.record(u).phase is not Phase.PENDING for u in uids) >= PODS // 4

    wait_until(in_flight, 120, "creates to be in flight")
    for victim in workers[:KILLS]:
        victim.kill(signal.SIGKILL)
    for victim in workers[:KILLS]:
        victim.proc.wait(10)  # type: ignore[union-attr]
        fleet.start_worker(concurrency=4)

    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=300)
    assert not [u for u in uids if fleet.record(u).phase is Phase.FAILED]
    one_instance_each(fleet, uids)
    wait_until(lambda: fleet.store.due_steps() == {}, 30, "every chain to end and nothing to be due")


def test_a_spurious_resume_makes_a_second_delivery_that_changes_nothing(make_fleet: Make) -> None:
    fleet = make_fleet(health={"interval_seconds": 600})
    fleet.start_worker(concurrency=4)
    uids = [fleet.submit(example_pod(f"twice-{i}")) for i in range(10)]

    def send(task: str, uid: str, generation: int | None) -> None:
        fleet.app.send_task(task, kwargs=pod_task_kwargs(uid, generation))

    # Every step in flight looks overdue to this pass, so each free pod's step is published again.
    eager = Resume(fleet.settings, fleet.store, send, clock=lambda: time.time() + 3600)
    resumed: set[str] = set()

    def resumed_until_running() -> bool:
        resumed.update(eager.run().resumed)
        return all(fleet.record(u).phase is Phase.RUNNING for u in uids)

    wait_until(resumed_until_running, 180, "pods to reach Running under spurious resumes", interval=0.5)
    assert resumed, "no step was published again"
    one_instance_each(fleet, uids)
    # Whether an original step arrived after its resume is up to timing; this one surely does: a
    # continuation the record no longer names, as a step the resume took the chain from.
    late = {**pod_task_kwargs(sorted(resumed)[0], None), "continuation": True}
    fleet.app.send_task(POD_CREATE, kwargs=late)

    def superseded() -> bool:
        return "'superseded'" in "\n".join(w.output() for w in fleet.workers)

    wait_until(superseded, 30, "a late original step to exit as superseded")
    one_instance_each(fleet, uids)
