"""The health sweep end to end: real worker, Redis, moto behind the counting proxy, the agent simulator.

Shown here: a sweep of 1,000 pods makes at most 2 DescribeInstances calls (counted at the
endpoint, plus two DescribeInstanceStatus listings of impaired instances); an impaired instance is
replaced; an agent forced to fail is marked Unhealthy after the threshold and remediated per
restartPolicy (a new instance for Always, Failed for Never); an agent answering Unknown forever ends
Unhealthy after the unknown threshold; a flapping agent is marked Flapping (condition + one event).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.v1 import simulation_pb2
from tests.maintenance.conftest import FAST, Make, SimControl, run_task
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import NODE, TEST_AMI, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.contract import FLAPPING, HEALTHY, TAG_CLUSTER
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import Phase
from vkec2.ec2.gateway import jsonable

SWEEP = "vkec2.health.sweep"


def seed_running_pods(fleet: FleetHarness, agent_sim: str, count: int) -> list[str]:
    """``count`` Running pod records with real moto instances and launched simulated workloads."""
    instances: list[dict[str, Any]] = []
    while len(instances) < count:
        n = min(250, count - len(instances))
        out = fleet.ec2.run_instances(
            ImageId=TEST_AMI,
            InstanceType="m5.large",
            MinCount=n,
            MaxCount=n,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": TAG_CLUSTER, "Value": fleet.cluster}]}
            ],
        )
        instances += [jsonable(i) for i in out["Instances"]]
    uids = []
    for i, inst in enumerate(instances):
        pod = example_pod(f"seed-{i}")
        fleet.store.put_desired(pod, NODE)
        uid = str(pod["metadata"]["uid"])
        inst["State"] = {"Code": 16, "Name": "running"}
        with fleet.store.locked(uid) as lock:
            lock.write(
                {
                    "phase": Phase.RUNNING.value,
                    "instance": inst,
                    "instance_id": inst["InstanceId"],
                    "endpoint": agent_sim,
                    "launched_at": 1.0,
                }
            )
        uids.append(uid)
    agents = AgentClient(fleet.settings.agent)

    def launch(uid: str) -> None:
        rec = fleet.record(uid)
        target = AgentTarget(endpoint=rec.endpoint, instance_id=rec.instance_id)
        wait_until(lambda: agents.serving(target), 30, f"the agent of {rec.instance_id}", interval=0.2)
        agents.launch(target, rec.spec)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(launch, uids))
    agents.close()
    return uids


def test_a_sweep_of_1000_pods_makes_at_most_two_describe_calls(
    make_fleet: Make, ec2_proxy: Ec2Proxy, agent_sim: str
) -> None:
    # moto answers a 1,000-ID DescribeInstances slowly when the machine is busy: allow it the time.
    fleet = make_fleet(
        health={"interval_seconds": 5},
        aws={"read_timeout_seconds": 120},
        celery={"lock_max_hold_seconds": 1500},  # a step's EC2 calls fit: 4 x (3 x 121 s + 5 s)
    )
    uids = seed_running_pods(fleet, agent_sim, 1000)
    fleet.start_worker(concurrency=2, queues="health")
    ec2_proxy.reset_counts()
    result = run_task(fleet, SWEEP, timeout=180)
    assert result["pods"] == 1000 and result["checked"] == 1000, (result, fleet.workers[0].output()[-3000:])
    assert result["unhealthy"] == 0 and result["remediated"] == 0, result
    assert ec2_proxy.calls["DescribeInstances"] <= 2, dict(ec2_proxy.calls)
    # Besides that, only the two filtered status-check listings (impaired instances), whatever the size.
    assert dict(ec2_proxy.calls) == {
        "DescribeInstances": ec2_proxy.calls["DescribeInstances"],
        "DescribeInstanceStatus": 2,
    }, dict(ec2_proxy.calls)
    assert all(fleet.record(u).phase is Phase.RUNNING for u in uids[:50])


def running_pod(fleet: FleetHarness, name: str, restart_policy: str = "Always") -> tuple[str, str]:
    uid = fleet.submit(example_pod(name, restart_policy=restart_policy))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    return uid, fleet.record(uid).instance_id


def reasons(fleet: FleetHarness, uid: str) -> list[str]:
    return [e.reason for _, e in fleet.store.outbox_events(NODE, count=100_000) if e.uid == uid]


def sweep_until(fleet: FleetHarness, done: Any, what: str, rounds: int = 40) -> None:
    for _ in range(rounds):
        run_task(fleet, SWEEP)
        if done():
            return
    raise AssertionError(f"after {rounds} sweeps: {what}; outbox: {fleet.store.outbox_events(NODE)[-5:]}")


def test_failed_agent_is_unhealthy_at_the_threshold_and_replaced_for_always(
    make_fleet: Make, sim: SimControl
) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    uid, first = running_pod(fleet, "fails-always")
    sim.force(first, simulation_pb2.FORCED_STATE_FAILED, reason="Error", message="forced")
    failures: list[int] = []

    def replaced() -> bool:
        rec = fleet.record(uid)
        failures.append(int(rec.health.get("failures", 0)))
        return "Unhealthy" in reasons(fleet, uid)

    sweep_until(fleet, replaced, "the pod never became Unhealthy")
    assert max(failures[:-1], default=0) < 3  # not before the threshold
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    rec = fleet.record(uid)
    assert rec.instance_id != first and rec.attempt == 1
    assert fleet.instances_by_uid()[uid] == [rec.instance_id]
    assert first not in {i for ids in fleet.instances_by_uid().values() for i in ids}


def test_impaired_instance_is_replaced_for_always(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    uid, first = running_pod(fleet, "impaired-always")
    ec2_proxy.impaired.add(first)
    sweep_until(
        fleet, lambda: "InstanceImpaired" in reasons(fleet, uid), "the impaired instance was not noticed"
    )
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    rec = fleet.record(uid)
    assert rec.instance_id != first and rec.attempt == 1
    assert fleet.instances_by_uid()[uid] == [rec.instance_id]
    [event] = [
        e
        for _, e in fleet.store.outbox_events(NODE, count=100_000)
        if e.uid == uid and e.reason == "InstanceImpaired"
    ]
    assert event.event_type == "Warning" and "instance status check" in event.message


def test_failed_agent_with_restart_policy_never_ends_failed(make_fleet: Make, sim: SimControl) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    uid, first = running_pod(fleet, "fails-never", restart_policy="Never")
    sim.force(first, simulation_pb2.FORCED_STATE_NOT_SERVING)
    sweep_until(fleet, lambda: fleet.record(uid).phase is Phase.FAILED, "the pod never failed")
    rec = fleet.record(uid)
    assert rec.reason == "Unhealthy"
    assert reasons(fleet, uid)[-2:] == ["Unhealthy", "Unhealthy"]  # the health event, then Failed
    assert uid not in fleet.instances_by_uid()


def test_unknown_forever_ends_unhealthy_after_the_unknown_threshold(
    make_fleet: Make, sim: SimControl
) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    uid, first = running_pod(fleet, "unknown", restart_policy="Never")
    sim.force(first, simulation_pb2.FORCED_STATE_UNKNOWN)
    seen: list[int] = []

    def failed() -> bool:
        rec = fleet.record(uid)
        seen.append(int(rec.health.get("unknowns", 0)))
        return rec.phase is Phase.FAILED

    sweep_until(fleet, failed, "the Unknown pod was never given up")
    assert max(seen[:-1]) == 3  # 1, 2, 3 recorded; the 4th (threshold) makes it Unhealthy
    assert "Unhealthy" in reasons(fleet, uid)


def test_flapping_agent_is_marked_flapping_once(make_fleet: Make, sim: SimControl) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    uid, iid = running_pod(fleet, "flaps")
    for i in range(8):
        if i % 2 == 0:
            sim.force(iid, simulation_pb2.FORCED_STATE_NOT_SERVING)
        else:
            sim.clear(iid)
        expected = "failed" if i % 2 == 0 else "ok"
        checks = int(fleet.record(uid).health.get("checks", 0))

        def observed(expected: str = expected, checks: int = checks) -> bool:
            health = fleet.record(uid).health
            return int(health.get("checks", 0)) > checks and health.get("last_result") == expected

        sweep_until(fleet, observed, f"check {i} was never taken")
    rec = fleet.record(uid)
    conditions = {c["type"]: c for c in rec.conditions}
    assert conditions[FLAPPING]["status"] == "True", rec.conditions
    assert conditions[HEALTHY]["status"] == "True"  # never failed 3 times in a row
    assert reasons(fleet, uid).count("Flapping") == 1  # damped: one event, not one per flip
    assert rec.instance_id == iid and rec.phase is Phase.RUNNING


def _go_silent(fleet: FleetHarness, uid: str) -> None:
    """Make a pod look as if its last write was long ago (its task message was lost)."""
    fleet.store.redis.hset(fleet.store.keys.pod(uid), "updated_at", "1.0")


def test_a_create_whose_message_was_lost_is_resumed_by_the_sweep(make_fleet: Make) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    pod = example_pod("lost-create")
    uid = str(pod["metadata"]["uid"])
    fleet.store.put_desired(pod, NODE)  # desired, but the create message never arrives
    result = run_task(fleet, SWEEP)
    assert result["resumed"] == 0  # a fresh record is not stalled
    _go_silent(fleet, uid)
    result = run_task(fleet, SWEEP)
    assert result["resumed"] == 1
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    assert len(fleet.instances_by_uid()[uid]) == 1


def test_a_delete_whose_message_was_lost_is_resumed_by_the_sweep(make_fleet: Make) -> None:
    fleet = make_fleet(**FAST)
    fleet.start_worker(concurrency=4)
    uid, instance = running_pod(fleet, "lost-delete")
    fleet.store.mark_deleted(uid)  # deleted, but the delete message never arrives
    _go_silent(fleet, uid)
    assert run_task(fleet, SWEEP)["resumed"] == 1
    fleet.wait_phase([uid], {Phase.TERMINATED}, timeout=120)
    assert instance not in {i for ids in fleet.instances_by_uid().values() for i in ids}
