"""End to end: real Celery workers, real Redis, moto's EC2 server over HTTP, the agent simulator over gRPC.

These are the fleet-core guarantees: exactly one instance per pod whatever is delivered twice or
replayed, crash safety under SIGKILL, delete winning over an in-flight create, and the EC2 call
budget per pod (counted at the endpoint by the proxy in front of moto).
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]


def test_duplicate_deliveries_and_replays_converge_to_one_instance_per_pod(make_fleet: Make) -> None:
    fleet = make_fleet()
    pods = [example_pod(f"dup-{i}") for i in range(50)]
    uids = [str(p["metadata"]["uid"]) for p in pods]
    for pod in pods:
        fleet.store.put_desired(pod, "vkec2-test-node")
    # Each create delivered twice, and replayed once more by name exactly as `celery call` does.
    for uid in uids:
        fleet.send("vkec2.pods.create", uid=uid)
        fleet.send("vkec2.pods.create", uid=uid)
    fleet.start_worker(concurrency=4)
    for uid in uids:
        fleet.send("vkec2.pods.create", uid=uid)
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=180)

    by_uid = fleet.instances_by_uid()
    assert sorted(by_uid) == sorted(uids)
    assert all(len(ids) == 1 for ids in by_uid.values()), {u: i for u, i in by_uid.items() if len(i) > 1}
    for uid in uids:
        rec = fleet.record(uid)
        assert rec.instance_id == by_uid[uid][0]
        assert rec.instance["InstanceId"] == rec.instance_id and rec.instance["State"]["Name"] == "running"


def test_worker_killed_mid_create_loses_nothing_and_duplicates_nothing(make_fleet: Make) -> None:
    # The fleet as deployed: beat's health sweep resumes a chain whose message the kill lost (a
    # message taken off the queue but not yet recorded as unacknowledged dies with its worker).
    fleet = make_fleet(health={"interval_seconds": 2})
    fleet.start_beat()
    first = fleet.start_worker(concurrency=4)
    uids = [fleet.submit(example_pod(f"crash-{i}")) for i in range(30)]

    def some_in_flight() -> bool:
        phases = [fleet.record(u).phase for u in uids]
        return any(p is not Phase.PENDING for p in phases)

    wait_until(some_in_flight, 60, "creates to be in flight")
    first.kill(signal.SIGKILL)
    first.proc.wait(10)  # type: ignore[union-attr]
    fleet.start_worker(concurrency=4)
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=180)

    by_uid = fleet.instances_by_uid()
    assert sorted(by_uid) == sorted(uids), "an instance without a pod (orphan) or a pod without one"
    assert all(len(ids) == 1 for ids in by_uid.values())


def test_delete_while_create_is_in_flight_terminates_the_instance(make_fleet: Make) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    uid = fleet.submit(example_pod("short-lived"))
    wait_until(lambda: fleet.record(uid).phase is not Phase.PENDING, 60, "the create to start")
    fleet.delete(uid)
    fleet.wait_phase([uid], {Phase.TERMINATED}, timeout=60)
    assert fleet.instances_by_uid(("pending", "running", "stopping", "stopped")) == {}
    # A late create (redelivered, or replayed by hand) must not bring it back.
    fleet.send("vkec2.pods.create", uid=uid)
    fleet.send("vkec2.pods.delete", uid=uid)
    fleet.wait_phase([uid], {Phase.TERMINATED}, timeout=10)
    assert fleet.instances_by_uid(("pending", "running")) == {}


def test_delete_before_any_step_leaves_nothing(make_fleet: Make) -> None:
    fleet = make_fleet()
    uid = fleet.submit(example_pod("never-ran"))
    fleet.delete(uid)
    fleet.start_worker(concurrency=2)
    fleet.wait_phase([uid], {Phase.TERMINATED}, timeout=60)
    assert fleet.instances_by_uid(("pending", "running")) == {}


def test_invalid_annotation_fails_the_pod_without_launching(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=2)
    ec2_proxy.reset_counts()
    uid = fleet.submit(example_pod("bad", annotations={"compute.amazonaws.com/tags": "not json"}))
    fleet.wait_phase([uid], {Phase.FAILED}, timeout=60)
    rec = fleet.record(uid)
    assert rec.reason == "InvalidAnnotation" and "compute.amazonaws.com/tags" in rec.message
    assert ec2_proxy.calls["RunInstances"] == 0
    [(_, event)] = [e for e in fleet.store.outbox_events("vkec2-test-node") if e[1].uid == uid]
    assert event.event_type == "Warning" and event.reason == "InvalidAnnotation"


def test_agent_that_never_answers_gets_its_instance_terminated_and_the_pod_failed(
    make_fleet: Make, moto_url: str
) -> None:
    from tests.support.services import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    fleet = make_fleet(
        agent={"endpoint": f"static:{dead}", "boot_timeout_seconds": 2, "call_timeout_seconds": 1},
        max_attempts=2,
    )
    fleet.start_worker(concurrency=2)
    uid = fleet.submit(example_pod("silent"))
    fleet.wait_phase([uid], {Phase.FAILED}, timeout=90)
    rec = fleet.record(uid)
    assert rec.reason == "AgentBootTimeout" and rec.attempt == 2
    assert fleet.instances_by_uid(("pending", "running")) == {}
    assert len(fleet.instances(("shutting-down", "terminated"))) == 2


@pytest.mark.slow
def test_200_pods_created_then_deleted_with_4_threads(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    # The call budget itself: throttled answers (counted at the endpoint too) would blur it, so
    # moto's behaviour; tests/fleet/test_aws_like_e2e.py measures the same under AWS's.
    fleet = make_fleet(aws_like=False)
    fleet.start_worker(concurrency=4)
    ec2_proxy.reset_counts()
    uids = [fleet.submit(example_pod(f"load-{i}")) for i in range(200)]
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=600)
    create_calls = sum(ec2_proxy.calls.values())
    ec2_proxy.reset_counts()
    for uid in uids:
        fleet.delete(uid)
    fleet.wait_phase(uids, {Phase.TERMINATED}, timeout=600)
    delete_calls = sum(ec2_proxy.calls.values())
    print(
        f"\nEC2 calls per pod: cold create {create_calls / 200:.2f} (goal <= 2), "
        f"delete {delete_calls / 200:.2f} (goal <= 0.1); delete calls {dict(ec2_proxy.calls)}"
    )
    assert fleet.instances_by_uid(("pending", "running")) == {}
    assert create_calls <= 2 * 200 and delete_calls <= 0.1 * 200
    tagged = fleet.instances(("shutting-down", "terminated"))
    assert {t["Value"] for i in tagged for t in i["Tags"] if t["Key"] == TAG_POD_UID} == set(uids)
    assert all(any(t["Key"] == TAG_CLUSTER for t in i["Tags"]) for i in tagged)
