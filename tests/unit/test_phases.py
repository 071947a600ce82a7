"""The phase rules of :mod:`vkec2.domain.phases`: one home for what ends, starts or resets a pod."""

from __future__ import annotations

from dataclasses import fields

import pytest

from vkec2.domain import phases
from vkec2.domain.models import PodRecord
from vkec2.domain.phases import Phase


def test_final_and_creating_phases_match_the_phase_properties() -> None:
    assert {p for p in Phase if p.final} == phases.FINAL_PHASES
    assert {p for p in Phase if p.creating} == phases.CREATING_PHASES
    assert not phases.FINAL_PHASES & phases.CREATING_PHASES


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("deleted", [False, True])
def test_a_record_is_done_once_deleted_and_terminated_and_deleting_before(
    phase: Phase, deleted: bool
) -> None:
    rec = PodRecord(uid="u", phase=phase, deleted=deleted)
    assert rec.done == (deleted and phase is Phase.TERMINATED)
    assert rec.deleting == (deleted and phase is not Phase.TERMINATED)
    assert not (rec.done and rec.deleting)


def test_a_workload_may_have_started_once_handed_to_the_agent() -> None:
    started = {p for p in Phase if phases.may_have_started(p, has_endpoint=False)}
    assert started == {Phase.LAUNCHING, Phase.RUNNING, Phase.SUCCEEDED}
    assert phases.may_have_started(Phase.TERMINATING, has_endpoint=True)
    assert not phases.may_have_started(Phase.BOOTING, has_endpoint=True)


def test_kubernetes_finished_phases_are_succeeded_and_failed() -> None:
    assert set(phases.K8S_FINISHED) == {"Succeeded", "Failed"}
    assert None not in phases.K8S_FINISHED and "Running" not in phases.K8S_FINISHED


def test_the_agent_settles_a_pod_only_when_running_succeeded_or_failed() -> None:
    assert phases.from_agent("Running") is Phase.RUNNING
    assert phases.from_agent("Succeeded") is Phase.SUCCEEDED
    assert phases.from_agent("Failed") is Phase.FAILED
    for still in (phases.AGENT_PENDING, "", "Unknown", "running"):
        assert phases.from_agent(still) is None


def test_an_instance_is_lost_when_stopping_stopped_terminating_or_gone() -> None:
    for state in ("shutting-down", "terminated", "stopping", "stopped", phases.GONE):
        assert phases.instance_lost(state)
    for alive in ("pending", "running", None):
        assert not phases.instance_lost(alive)


def test_phase_stamps_time_boot_and_agent_readiness_only_on_a_change() -> None:
    assert phases.phase_stamps(Phase.PROVISIONING, Phase.BOOTING, 5.0) == {"running_at": 5.0}
    assert phases.phase_stamps(Phase.BOOTING, Phase.LAUNCHING, 6.0) == {"launching_at": 6.0}
    assert phases.phase_stamps(Phase.BOOTING, Phase.BOOTING, 7.0) == {}
    assert phases.phase_stamps(Phase.LAUNCHING, Phase.RUNNING, 8.0) == {}


def test_a_pod_is_provisioned_for_the_first_time_once() -> None:
    assert phases.first_provisioned(Phase.PENDING, Phase.PROVISIONING, 0)
    assert phases.first_provisioned(Phase.PENDING, Phase.RUNNING, 0)  # adopted, already running
    assert not phases.first_provisioned(Phase.PENDING, Phase.PROVISIONING, 1)  # a retry
    assert not phases.first_provisioned(Phase.PENDING, Phase.FAILED, 0)
    assert not phases.first_provisioned(Phase.BOOTING, Phase.LAUNCHING, 0)


def test_a_new_attempt_drops_the_last_attempts_instance_with_fresh_values() -> None:
    first, second = phases.new_attempt(3), phases.new_attempt(3)
    assert first == {
        "attempt": 3,
        "instance": {},
        "instance_id": "",
        "endpoint": "",
        "launched_at": 0.0,
        "launch_batch": "",
        "launch_slot": 0.0,
    }
    assert first["instance"] is not second["instance"]  # never a shared mutable default
    assert phases.ATTEMPT_FIELDS == (
        "instance",
        "instance_id",
        "endpoint",
        "launched_at",
        "launch_batch",
        "launch_slot",
    )
    defaults = PodRecord(uid="u")
    assert all(getattr(defaults, name) == first[name] for name in phases.ATTEMPT_FIELDS)


def test_the_reset_fields_are_pod_record_fields() -> None:
    names = {f.name for f in fields(PodRecord)}
    assert set(phases.LIFE_FIELDS) <= names
    assert set(phases.ATTEMPT_FIELDS) <= set(phases.LIFE_FIELDS)
    assert len(set(phases.LIFE_FIELDS)) == len(phases.LIFE_FIELDS)
