"""Unit tests of the pure parts of the status path: phase rules, condition merging, readiness gates."""

from __future__ import annotations

from typing import Any

from producer.deletion import containers_ran
from producer.status import (
    FleetView,
    build_status,
    event_object,
    event_text,
    k8s_phase,
    merge_conditions,
    readiness,
)
from vkec2.contract import AGENT_CONNECTED, INSTANCE_READY
from vkec2.domain.models import Phase, PodRecord, StatusEvent

T0 = 1_700_000_000.0
GATES = [{"conditionType": INSTANCE_READY}, {"conditionType": AGENT_CONNECTED}]


def _pod(status: dict[str, Any] | None = None, gates: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "sim"}]}
    if gates:
        spec["readinessGates"] = GATES
    return {
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7"},
        "spec": spec,
        "status": status or {"phase": "Pending"},
    }


def _cond(kind: str, ok: bool) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": "2023-11-14T22:13:20Z"}


def _running(instance: bool = True, agent: bool = True, ready: bool = True) -> FleetView:
    return FleetView(
        phase=Phase.RUNNING,
        instance_id="i-1",
        pod_ip="10.0.0.9",
        conditions=[_cond(INSTANCE_READY, instance), _cond(AGENT_CONNECTED, agent)],
        container_statuses=[{"name": "main", "ready": ready, "state": {"running": {}}, "restartCount": 0}],
    )


def _get(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_terminal_phases_are_never_left() -> None:
    assert k8s_phase("Failed", Phase.RUNNING) == "Failed"
    assert k8s_phase("Succeeded", Phase.PENDING) == "Succeeded"
    assert k8s_phase("Succeeded", Phase.FAILED) == "Succeeded"
    assert k8s_phase("Running", Phase.FAILED) == "Failed"
    assert k8s_phase("Pending", Phase.BOOTING) == "Pending"
    assert k8s_phase(None, Phase.TERMINATING) == "Running"


def test_build_status_does_not_regress_a_failed_pod() -> None:
    failed = build_status(_pod(), FleetView(Phase.FAILED, "InvalidAnnotation", "bad tags"), T0)
    assert failed["phase"] == "Failed" and failed["reason"] == "InvalidAnnotation"
    later = build_status(_pod(failed), _running(), T0 + 5)
    assert later["phase"] == "Failed" and later["reason"] == "InvalidAnnotation"
    assert later["containerStatuses"] == failed["containerStatuses"]


def test_running_pod_gets_ips_conditions_and_ready_with_all_gates_true() -> None:
    status = build_status(_pod(), _running(), T0)
    assert status["phase"] == "Running"
    assert status["podIP"] == status["hostIP"] == "10.0.0.9"
    assert status["podIPs"] == [{"ip": "10.0.0.9"}] == status["hostIPs"]
    assert _get(status, INSTANCE_READY)["status"] == "True"
    assert _get(status, AGENT_CONNECTED)["status"] == "True"
    assert _get(status, "ContainersReady")["status"] == "True"
    assert _get(status, "Ready")["status"] == "True"
    assert _get(status, "PodScheduled")["status"] == "True"


def test_ready_waits_for_every_readiness_gate() -> None:
    status = build_status(_pod(), _running(agent=False), T0)
    assert _get(status, "ContainersReady")["status"] == "True"
    ready = _get(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReadinessGatesNotReady"
    assert AGENT_CONNECTED in ready["message"]


def test_ready_without_gates_follows_the_containers() -> None:
    assert _get(build_status(_pod(gates=False), _running(agent=False), T0), "Ready")["status"] == "True"
    not_ready = build_status(_pod(gates=False), _running(ready=False), T0)
    assert _get(not_ready, "Ready")["reason"] == "ContainersNotReady"


def test_a_missing_gate_condition_keeps_the_pod_unready() -> None:
    view = _running()
    view.conditions = [_cond(INSTANCE_READY, True)]  # no AgentConnected condition at all
    ready = _get(build_status(_pod(), view, T0), "Ready")
    assert ready["status"] == "False" and "does not exist" in ready["message"]


def test_readiness_uses_the_agents_containers_ready_when_no_container_statuses() -> None:
    spec = {"containers": [{"name": "main"}]}
    containers, ready = readiness("Running", spec, [], [], [{"type": "ContainersReady", "status": "True"}])
    assert containers["status"] == ready["status"] == "True"
    containers, ready = readiness("Pending", spec, [], [], [])
    assert (
        containers["status"] == "False" and containers["message"] == "containers with unready status: [main]"
    )


def test_merge_keeps_other_conditions_and_transition_times() -> None:
    current = [
        {"type": "example.com/Custom", "status": "True", "lastTransitionTime": "a"},
        {"type": INSTANCE_READY, "status": "False", "lastTransitionTime": "b"},
        {"type": AGENT_CONNECTED, "status": "True", "lastTransitionTime": "c"},
    ]
    merged = merge_conditions(
        current,
        [
            {"type": INSTANCE_READY, "status": "True"},
            {"type": AGENT_CONNECTED, "status": "True", "lastTransitionTime": "z"},
        ],
        "now",
    )
    by_type = {c["type"]: c for c in merged}
    assert by_type["example.com/Custom"] == current[0]
    assert by_type[INSTANCE_READY]["lastTransitionTime"] == "now"  # False -> True: a transition
    assert by_type[AGENT_CONNECTED]["lastTransitionTime"] == "c"  # unchanged status keeps its time
    assert [c["type"] for c in merged] == [c["type"] for c in current]


def test_a_second_identical_update_changes_nothing() -> None:
    first = build_status(_pod(), _running(), T0)
    second = build_status(_pod(first), _running(), T0 + 60)
    assert second == first


def test_the_record_wins_over_a_stale_event() -> None:
    stale = StatusEvent(
        uid="u-1",
        namespace="default",
        name="web",
        phase=Phase.BOOTING,
        reason="InstanceRunning",
        instance_id="i-1",
        pod_ip="10.0.0.9",
    )
    record = PodRecord(
        uid="u-1",
        phase=Phase.RUNNING,
        instance_id="i-1",
        instance={"InstanceId": "i-1", "PrivateIpAddress": "10.0.0.9"},
        conditions=[_cond(INSTANCE_READY, True), _cond(AGENT_CONNECTED, True)],
    )
    view = FleetView.of(stale, record)
    assert view.phase is Phase.RUNNING and view.pod_ip == "10.0.0.9"
    assert FleetView.of(stale, None).phase is Phase.BOOTING


def test_events_are_named_after_the_outbox_entry_and_typed_by_severity() -> None:
    event = StatusEvent(
        uid="u-1",
        namespace="default",
        name="web",
        phase=Phase.FAILED,
        reason="InvalidAnnotation",
        message="bad tags",
        event_type="Warning",
        instance_id="",
    )
    reason, message = event_text(event)
    obj = event_object(_pod(), "1700000000000-3", "vk-0", reason, message, True, T0)
    assert obj["metadata"] == {"name": "web.1700000000000.3", "namespace": "default"}
    assert obj["type"] == "Warning" and obj["reason"] == "InvalidAnnotation" and obj["message"] == "bad tags"
    assert obj["involvedObject"]["uid"] == "u-1" and obj["source"] == {
        "component": "vkec2-producer",
        "host": "vk-0",
    }
    quiet = StatusEvent(uid="u-1", namespace="default", name="web", phase=Phase.RUNNING, instance_id="i-9")
    assert event_text(quiet) == ("Running", "pod is Running (instance i-9)")


def test_containers_ran() -> None:
    assert not containers_ran(_pod(), None)
    assert not containers_ran(_pod(), PodRecord(uid="u", phase=Phase.BOOTING))
    assert containers_ran(_pod(), PodRecord(uid="u", phase=Phase.RUNNING))
    assert containers_ran(_pod(), PodRecord(uid="u", phase=Phase.LAUNCHING))
    running = {"phase": "Running", "containerStatuses": [{"name": "main", "state": {"running": {}}}]}
    assert containers_ran(_pod(running), None)
    waited = {"phase": "Pending", "containerStatuses": [{"name": "main", "state": {"waiting": {}}}]}
    assert not containers_ran(_pod(waited), PodRecord(uid="u", phase=Phase.FAILED))


def test_the_instance_type_and_zone_reach_the_pods_annotations() -> None:
    from vkec2.contract import INSTANCE_ID_ANNOTATION, INSTANCE_TYPE_ANNOTATION, ZONE_ANNOTATION

    instance = {
        "InstanceId": "i-0abc",
        "InstanceType": "c6i.large",
        "Placement": {"AvailabilityZone": "us-west-2a"},
    }
    rec = PodRecord(uid="u", namespace="ns", name="p", instance=instance, instance_id="i-0abc")
    event = StatusEvent.from_fields(StatusEvent.of(rec, Phase.PROVISIONING).to_fields())
    assert (event.instance_type, event.zone) == ("c6i.large", "us-west-2a")
    wanted = {
        INSTANCE_ID_ANNOTATION: "i-0abc",
        INSTANCE_TYPE_ANNOTATION: "c6i.large",
        ZONE_ANNOTATION: "us-west-2a",
    }
    assert FleetView.of(event, None).annotations() == wanted
    assert FleetView.of(event, rec).annotations() == wanted
    # An entry written before these fields existed, and a pod without an instance, report no more.
    legacy = {k: v for k, v in event.to_fields().items() if k not in ("instance_type", "zone")}
    assert FleetView.of(StatusEvent.from_fields(legacy), None).annotations() == {
        INSTANCE_ID_ANNOTATION: "i-0abc"
    }
    assert FleetView.of(StatusEvent.of(PodRecord(uid="v"), Phase.PENDING), None).annotations() == {}
