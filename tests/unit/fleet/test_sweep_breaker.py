"""The health sweep's remediation circuit breaker and replacement cap, on the fakes with 50 pods.

When most agents stop answering while EC2 reports their instances running, the sweep must not
replace them (the worker is cut off, not the instances): 0 replacements, the pods marked Healthy
Unknown, the breaker open in the store. A minority of unreachable agents is replaced after the usual
thresholds, at most the cap per interval; an instance EC2 reports terminated is replaced even while
the breaker is open; when the agents answer again the breaker closes and a pod must fail the full
threshold again before it is replaced.
"""

from __future__ import annotations

import time
from typing import Any

from tests.support.fakeagents import app_status
from tests.unit.fleet.world import NODE, World, pod, settings
from vkec2.contract import HEALTHY, POD_CREATE, TAG_POD_UID
from vkec2.domain.breaker import BreakerPolicy, BreakerState, FailureClass, PassTally, decide, remediation_cap
from vkec2.domain.models import Phase, PodRecord
from vkec2.errors import AgentIdentityMismatch, AgentUnavailable
from vkec2.fleet.breaker import failure_class
from vkec2.fleet.sweep import HealthSweep, SweepReport

PODS = 50
THRESHOLD = 3  # health.unhealthy_threshold


class Fleet:
    """50 Running pods on running instances, a hand-moved clock and a recorded ``publish``."""

    def __init__(self, **health: Any) -> None:
        self.world = World(settings(health={"unhealthy_threshold": THRESHOLD, **health}))
        self.now = time.time()
        self.published: list[tuple[str, str]] = []
        self.world.store.clock = lambda: self.now
        self.sweep = HealthSweep(
            self.world.settings,
            self.world.store,
            self.world.ec2,
            self.world.agents,
            self.world.lifecycle,
            lambda name, uid: self.published.append((name, uid)),
            clock=lambda: self.now,
            worker="unit-worker/1",
        )
        self.instances: dict[str, str] = {}  # uid -> instance ID
        for i in range(PODS):
            uid = f"00000000-0000-4000-8000-{i:012d}"
            inst = self.world.ec2.add(tags={TAG_POD_UID: uid})
            rec = PodRecord(
                uid=uid,
                namespace="default",
                name=f"web-{i}",
                node=NODE,
                spec=pod(uid=uid),
                phase=Phase.RUNNING,
            )
            rec.generation = 1
            rec.instance, rec.instance_id = inst, inst["InstanceId"]
            rec.endpoint = f"{inst['PrivateIpAddress']}:7443"
            rec.launched_at = self.now
            rec.updated_at = self.now
            self.world.store.put(rec)
            self.instances[uid] = inst["InstanceId"]

    def run(self, advance: float = 60.0) -> SweepReport:
        self.now += advance
        return self.sweep.run()

    def unreachable(self, uids: list[str] | None = None) -> None:
        """The agents of ``uids`` (all: None) cannot be reached: grpc.health says not serving (the
        client's answer to UNAVAILABLE), the status call raises AgentUnavailable."""
        error = AgentUnavailable("simulated: connection refused")
        agents = self.world.agents
        if uids is None:
            agents.serving_default, agents.status_default = False, error
        for uid in uids or []:
            agents.serving_by[self.instances[uid]] = False
            agents.status_by[self.instances[uid]] = error

    def heal(self) -> None:
        agents = self.world.agents
        agents.serving_default, agents.status_default = True, app_status("Running")
        agents.serving_by.clear()
        agents.status_by.clear()

    def rec(self, uid: str) -> PodRecord:
        rec = self.world.store.get(uid)
        assert rec is not None
        return rec

    def healthy(self, uid: str) -> tuple[str, str]:
        cond = next(c for c in self.rec(uid).conditions if c["type"] == HEALTHY)
        return str(cond["status"]), str(cond["reason"])

    @property
    def uids(self) -> list[str]:
        return list(self.instances)


def test_all_agents_unreachable_while_ec2_runs_replaces_nothing() -> None:
    fleet = Fleet()
    fleet.run()  # all healthy
    fleet.unreachable()

    reports = [fleet.run() for _ in range(3 * THRESHOLD)]

    assert all(r.remediated == [] and r.unhealthy == [] for r in reports)
    assert fleet.world.ec2.terminated() == [] and fleet.published == []
    assert reports[-1].breaker_open and len(reports[-1].paused) == PODS
    assert all(fleet.rec(uid).phase is Phase.RUNNING for uid in fleet.uids)
    assert {fleet.healthy(uid) for uid in fleet.uids} == {("Unknown", "WorkerCannotReachAgents")}
    assert all(fleet.rec(uid).health["failures"] == 0 for uid in fleet.uids)
    breaker = fleet.world.store.breaker
    assert (breaker.open, breaker.failure, breaker.scope, breaker.worker) == (
        True,
        "unreachable",
        "worker",
        "unit-worker/1",
    )
    assert "cannot reach the agents" in breaker.message and breaker.share == 1.0
    # one event per pod when it is paused, none for passes that change nothing
    paused = [e for e in fleet.world.events if e.reason == "WorkerCannotReachAgents"]
    assert len(paused) == PODS


def test_a_minority_unreachable_is_replaced_up_to_the_cap() -> None:
    cap = remediation_cap(BreakerPolicy.from_settings(settings().health), PODS)
    assert cap == 5  # the default: 10 % of 50

    fleet = Fleet(max_remediations_per_interval=2)
    fleet.unreachable(fleet.uids[:5])
    reports = [fleet.run() for _ in range(THRESHOLD)]

    assert not any(r.breaker_open for r in reports)
    assert reports[-1].unhealthy == fleet.uids[:5]
    assert reports[-1].remediated == fleet.uids[:2] and reports[-1].deferred == fleet.uids[2:5]
    assert fleet.published == [(POD_CREATE, uid) for uid in fleet.uids[:2]]

    following = fleet.run()  # the next interval: the next two
    assert following.remediated == fleet.uids[2:4] and following.deferred == fleet.uids[4:5]
    assert fleet.run().remediated == fleet.uids[4:5]
    assert sorted(fleet.world.ec2.terminated()) == sorted(fleet.instances[u] for u in fleet.uids[:5])


def test_the_default_cap_lets_a_minority_through_in_one_interval() -> None:
    fleet = Fleet()
    fleet.unreachable(fleet.uids[:5])
    reports = [fleet.run() for _ in range(THRESHOLD)]
    assert reports[-1].remediated == fleet.uids[:5] and reports[-1].deferred == []


def test_an_instance_ec2_reports_terminated_is_replaced_while_the_breaker_is_open() -> None:
    fleet = Fleet()
    fleet.unreachable()
    assert fleet.run().breaker_open
    gone = fleet.uids[7]
    fleet.world.ec2.set_state(fleet.instances[gone], "terminated")

    report = fleet.run()

    assert report.breaker_open and report.remediated == [gone]
    assert fleet.rec(gone).phase is Phase.PENDING and fleet.rec(gone).reason == "InstanceLost"
    assert fleet.published == [(POD_CREATE, gone)]


def test_the_breaker_closes_when_agents_answer_and_counters_start_over() -> None:
    fleet = Fleet()
    fleet.unreachable()
    for _ in range(2 * THRESHOLD):
        fleet.run()
    assert fleet.world.store.breaker.open

    fleet.heal()
    report = fleet.run()
    assert {fleet.healthy(uid) for uid in fleet.uids} == {("True", "Healthy")}
    recovered = [e for e in fleet.world.events if e.reason == "Recovered"]
    assert len(recovered) == PODS
    while fleet.world.store.breaker.open:  # the window of passes empties of failures
        report = fleet.run()
    assert not report.breaker_open

    # one pod dies for real now: it needs the whole threshold of failures again
    dead = fleet.uids[0]
    fleet.unreachable([dead])
    reports = [fleet.run() for _ in range(THRESHOLD)]
    assert [r.remediated for r in reports] == [[]] * (THRESHOLD - 1) + [[dead]]


def test_the_breaker_counts_failure_classes_apart() -> None:
    policy = BreakerPolicy(share=0.2, window_passes=1, min_checks=5, max_remediations=None)
    mixed = PassTally(1.0, 50, {"unreachable": 8, "identity": 8, "workload": 8})
    state, changed = decide(BreakerState(), mixed, policy, "w")
    assert not state.open and not changed  # 16 % of each class: no single class passes 20 %

    identity = PassTally(2.0, 50, {"identity": 15})
    state, changed = decide(state, identity, policy, "w")
    assert state.open and changed and (state.failure, state.scope) == ("identity", "agents")
    assert state.reason == "AgentIdentityFailures"
    assert state.pauses(FailureClass.IDENTITY) and not state.pauses(FailureClass.UNREACHABLE)


def test_a_small_fleet_never_opens_the_breaker() -> None:
    policy = BreakerPolicy(share=0.2, window_passes=3, min_checks=5, max_remediations=None)
    state, _ = decide(BreakerState(), PassTally(1.0, 2, {"unreachable": 2}), policy, "w")
    assert not state.open


def test_one_dead_agent_of_a_small_fleet_is_no_pattern_but_every_agent_silent_is() -> None:
    policy = BreakerPolicy(share=0.2, window_passes=3, min_checks=5, max_remediations=None)
    state = BreakerState()
    for at in (1.0, 2.0, 3.0):  # 1 of 3 agents dead: 33 % of the checks, but one agent is no pattern
        state, _ = decide(state, PassTally(at, 3, {"unreachable": 1}), policy, "w")
        assert not state.open
    for at in (4.0, 5.0):  # every agent silent from this worker: the worker is cut off
        state, _ = decide(state, PassTally(at, 3, {"unreachable": 3}), policy, "w")
    assert state.open and state.scope == "worker" and state.reason == "WorkerCannotReachAgents"


def test_a_pass_of_one_check_neither_closes_nor_rescopes_an_open_breaker() -> None:
    policy = BreakerPolicy(share=0.2, window_passes=3, min_checks=5, max_remediations=None)
    state, _ = decide(BreakerState(), PassTally(1.0, 50, {"unreachable": 50}), policy, "w")
    assert state.open and state.scope == "worker"
    for at in (2.0, 3.0, 4.0):  # a busy sweep: one due pod per pass, unreachable
        state, changed = decide(state, PassTally(at, 1, {"unreachable": 1}), policy, "w")
        assert state.open and state.scope == "worker" and not changed
    state, changed = decide(state, PassTally(5.0, 1, {}), policy, "w")
    assert state.open and not changed  # one answer is no recovery either
    for at in (6.0, 7.0, 8.0):
        state, _ = decide(state, PassTally(at, 50, {}), policy, "w")
    assert not state.open


def test_agent_errors_are_classified() -> None:
    assert failure_class(AgentUnavailable("connection refused")) is FailureClass.UNREACHABLE
    assert failure_class(AgentUnavailable("SSL handshake failed: certificate")) is FailureClass.IDENTITY
    assert failure_class(AgentIdentityMismatch("another instance")) is FailureClass.IDENTITY
