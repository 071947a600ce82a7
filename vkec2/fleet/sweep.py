"""The health sweep: EC2 state in batches, agent checks fanned out with deadlines, remediation per policy.

One pass (:meth:`HealthSweep.run`, the body of ``vkec2.health.sweep``) reads every Running pod of the
cluster from Redis, describes their instances in batches (one DescribeInstances per 1,000 IDs, all
pages read, through :meth:`~vkec2.ec2.Ec2Gateway.describe`), lists the instances whose EC2 status
checks fail (:meth:`~vkec2.ec2.Ec2Gateway.impaired`, two calls), and asks each running instance's agent
for grpc.health and CheckApplicationHealth in chunks on a thread pool, each chunk under a deadline;
a check that misses it counts as Unknown. Results go through :mod:`vkec2.domain.health`. Only pods whose
health changed are written, each under its lock with a fenced write that also appends the status
event to the outbox, so 1,000 healthy pods cost no Redis writes. An instance that is gone,
stopped or impaired, or a pod that turned Unhealthy (agent unreachable or failing past the threshold, Unknown
past its own threshold), is remediated through :meth:`~vkec2.lifecycle.Lifecycle.replace`: a new
instance for Always/OnFailure (the caller's ``publish`` restarts the create chain), Failed for Never.
A workload the agent reports Succeeded is recorded as such by
:meth:`~vkec2.lifecycle.Lifecycle.completed` (the sweep writes no phase itself), and the create
chain is restarted to release its instance after the keep-alive. A pod whose create chain or delete has
written nothing for longer than a live one could (its message was lost) gets its task again.
Sweeps are single-flight per cluster and a pod is not re-checked within half an interval, so a
duplicated sweep counts nothing twice. Replacements for an agent's failure alone pass the
remediation gate (:mod:`vkec2.fleet.breaker`): while the circuit breaker is open for the failure's
class the pod is marked Healthy Unknown and its counters start over, and at most
``health.max_remediations_per_interval`` such replacements happen per interval; instances EC2
reports lost or impaired are replaced regardless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from vkec2.config import Settings
from vkec2.contract import HEALTHY, POD_CREATE, POD_DELETE
from vkec2.domain import phases
from vkec2.domain.agents import AgentTarget, AppStatus
from vkec2.domain.breaker import FailureClass
from vkec2.domain.health import (
    Change,
    HealthPolicy,
    HealthState,
    Outcome,
    next_check_delay,
    observe,
    with_conditions,
)
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase, PodRecord, StatusEvent
from vkec2.errors import AgentError, LockBusy, StaleFence, Vkec2Error
from vkec2.fleet.appsync import differs, write_status
from vkec2.fleet.breaker import (
    PassGate,
    RemediationGate,
    failure_class,
    is_paused,
    paused_conditions,
    tally,
    this_worker,
)
from vkec2.fleet.lifecycle import Lifecycle
from vkec2.fleet.spot import SpotNotices, lost_pods, lost_reason
from vkec2.observability import metrics
from vkec2.ports import Agents, Ec2, PodLock, PodStore

log = logging.getLogger("vkec2.domain.health")

CHUNK = 200
WORKLOAD = FailureClass.WORKLOAD
MAX_THREADS = 32


@dataclass
class Check:
    """The result of checking one pod's agent."""

    outcome: Outcome
    detail: str
    status: AppStatus | None = None
    failure: FailureClass | None = None


@dataclass
class SweepReport:
    pods: int = 0
    checked: int = 0
    busy: int = 0
    unhealthy: list[str] = field(default_factory=list)
    flapping: list[str] = field(default_factory=list)
    remediated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    breaker_open: bool = False
    skipped: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "checked": self.checked,
            "busy": self.busy,
            "unhealthy": len(self.unhealthy),
            "flapping": len(self.flapping),
            "remediated": len(self.remediated),
            "failed": len(self.failed),
            "succeeded": len(self.succeeded),
            "resumed": len(self.resumed),
            "paused": len(self.paused),
            "deferred": len(self.deferred),
            "breaker_open": self.breaker_open,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def _material(state: HealthState) -> tuple[Any, ...]:
    """The part of a health state worth a write (a steady healthy pod changes none of it)."""
    return (
        state.failures,
        state.unknowns,
        state.last_ok,
        state.flapping,
        state.unhealthy,
        len(state.transitions),
    )


class HealthSweep:
    """One cluster's health sweep."""

    def __init__(
        self,
        settings: Settings,
        store: PodStore,
        ec2: Ec2,
        agents: Agents,
        lifecycle: Lifecycle,
        publish: Callable[[str, str], None],
        clock: Callable[[], float] = time.time,
        worker: str = "",
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.agents = agents
        self.lifecycle = lifecycle
        self.publish = publish
        self.clock = clock
        self.policy = HealthPolicy.from_settings(settings.health)
        self.gate = RemediationGate(settings, store, worker or this_worker())
        self.notices = SpotNotices(store, self.lock_ttl_ms, clock)

    @property
    def lock_ttl_ms(self) -> int:
        return int(self.settings.celery.lock_ttl_seconds * 1000)

    # -- the pass -------------------------------------------------------------------------

    def run(self) -> SweepReport:
        report = SweepReport()
        started = time.monotonic()
        ttl = int(max(60.0, 3 * self.settings.health.interval_seconds) * 1000)
        with self.store.sweep_flight(ttl) as held:
            if not held:
                report.skipped = True
                return report
            try:
                self._run(report)
            finally:
                report.seconds = time.monotonic() - started
        return report

    @property
    def stall_seconds(self) -> float:
        """How long a create chain or a delete may go without writing before it is resumed.

        A live chain writes its record at every step (at least every countdown, plus a lock that
        a dead holder leaves behind), so silence past this means its message was lost.
        """
        celery = self.settings.celery
        return (
            2 * celery.max_countdown_seconds
            + celery.lock_ttl_seconds
            + 2 * self.settings.agent.call_timeout_seconds
        )

    def _resume_stalled(self, records: list[PodRecord], now: float, report: SweepReport) -> None:
        """Republish the task of pods whose create chain or delete went silent (a lost message).

        kombu's Redis transport can lose a message whose worker dies between taking it off the
        queue and recording it as unacknowledged; both tasks are idempotent, and a create sent
        from outside takes over the chain, so resuming is always safe.
        """
        for rec in records:
            if not rec.updated_at or now - rec.updated_at < self.stall_seconds:
                continue
            if rec.deleting:
                self.publish(POD_DELETE, rec.uid)
            elif not rec.deleted and rec.phase.creating:
                self.publish(POD_CREATE, rec.uid)
            else:
                continue
            report.resumed.append(rec.uid)
            log.warning(
                "pod %s/%s (%s): no progress in %.0fs as %s; resumed",
                rec.namespace,
                rec.name,
                rec.uid,
                now - rec.updated_at,
                rec.phase.value,
            )

    def _run(self, report: SweepReport) -> None:
        now = self.clock()
        spacing = self.settings.health.interval_seconds / 2
        records = self.store.records()
        self._resume_stalled(records, now, report)
        running = [r for r in records if r.phase is Phase.RUNNING and r.instance_id and not r.deleted]
        report.pods = len(running)
        due = []
        for rec in running:
            state = HealthState.from_dict(rec.health)
            if state.next_check > now or (state.last_checked and now - state.last_checked < spacing):
                continue
            due.append(rec)
        if not due:
            return
        instances = self.ec2.describe(r.instance_id for r in due)
        impaired = self.ec2.impaired()
        to_check: list[PodRecord] = []
        for rec in due:
            instance = instances.get(rec.instance_id)
            ec2_state = str(instance.get("State", {}).get("Name", phases.GONE)) if instance else phases.GONE
            if phases.instance_lost(ec2_state):  # a Spot interruption is named so (vkec2.fleet.spot)
                self._instance_lost(rec, *lost_reason(rec.instance_id, ec2_state, instance), report)
            elif rec.instance_id in impaired:
                self._instance_lost(
                    rec,
                    "InstanceImpaired",
                    f"instance {rec.instance_id} fails its EC2 {impaired[rec.instance_id]} status check",
                    report,
                )
            elif ec2_state == "running":
                to_check.append(rec)
        checks = self._check_all(to_check)
        report.busy += self.notices.mark(to_check, {uid: check.status for uid, check in checks.items()})
        report.checked = len(checks)
        metrics.count_health(check.outcome.value for check in checks.values())
        gate = self.gate.begin(tally((c.failure for c in checks.values()), now), len(running))
        report.breaker_open = gate.breaker.open
        for rec in to_check:
            self._apply(rec, checks[rec.uid], report, gate)
        self.gate.finish(gate, now)

    # -- agent checks ---------------------------------------------------------------------

    def check(self, rec: PodRecord) -> Check:
        target = AgentTarget(endpoint=rec.endpoint, instance_id=rec.instance_id)
        try:
            if not self.agents.serving(target):
                return self._not_serving(rec, target)
            status = self.agents.status(target)
        except AgentError as exc:
            return Check(Outcome.FAILED, exc.message, None, failure_class(exc))
        phase, settled = status.phase, phases.from_agent(status.phase)
        if settled is Phase.FAILED:
            detail = f"workload failed: {status.reason} {status.message}".strip()
            return Check(Outcome.FAILED, detail, status, WORKLOAD)
        if settled is not None or phase == phases.AGENT_PENDING:
            return Check(Outcome.OK, status.reason or phase, status)
        if not phase:
            return Check(Outcome.FAILED, "the agent runs no workload", status, WORKLOAD)
        return Check(
            Outcome.UNKNOWN, f"the agent reports {phase}: {status.message}".strip(), status, WORKLOAD
        )

    def _not_serving(self, rec: PodRecord, target: AgentTarget) -> Check:
        """grpc.health says no, or nothing: one status call tells an unreachable agent (and why) from
        one that answers but does not serve, for the breaker."""
        try:
            self.agents.status(target)
        except AgentError as exc:
            detail = f"agent of {rec.instance_id} is not serving: {exc.message}"
            return Check(Outcome.FAILED, detail, None, failure_class(exc))
        return Check(Outcome.FAILED, f"agent of {rec.instance_id} is not serving", None, WORKLOAD)

    def _check_all(self, recs: list[PodRecord]) -> dict[str, Check]:
        results: dict[str, Check] = {}
        if not recs:
            return results
        deadline = 2 * self.settings.agent.call_timeout_seconds + 1
        pool = ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(recs)), thread_name_prefix="vkec2-health")
        try:
            for start in range(0, len(recs), CHUNK):
                chunk = recs[start : start + CHUNK]
                futures: dict[Future[Check], PodRecord] = {pool.submit(self.check, r): r for r in chunk}
                done, _ = wait(futures, timeout=deadline)
                for fut, rec in futures.items():
                    if fut in done and fut.exception() is None:
                        results[rec.uid] = fut.result()
                    elif fut in done:
                        results[rec.uid] = Check(
                            Outcome.UNKNOWN, f"check failed: {fut.exception()}", None, WORKLOAD
                        )
                    else:
                        fut.cancel()
                        results[rec.uid] = Check(
                            Outcome.UNKNOWN,
                            f"no answer within the {deadline:.0f}s deadline",
                            None,
                            FailureClass.UNREACHABLE,
                        )
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    # -- writing results ------------------------------------------------------------------

    def _apply(self, rec: PodRecord, check: Check, report: SweepReport, gate: PassGate) -> None:
        if gate.pauses(check.failure):
            self._pause(rec, check, report, gate)
            return
        now = self.clock()
        old = HealthState.from_dict(rec.health)
        new, changes = observe(old, check.outcome, now, self.policy, check.detail)
        completed = check.status is not None and phases.from_agent(check.status.phase) is Phase.SUCCEEDED
        steady = not changes and _material(new) == _material(old) and not is_paused(rec.conditions)
        if steady and not completed and check.outcome is Outcome.OK and not differs(rec, check.status):
            return  # steady and healthy, its agent status unchanged: nothing to write
        try:
            with self.store.locked(rec.uid, self.lock_ttl_ms) as lock:
                fresh = self.store.get(rec.uid)
                if (
                    fresh is None
                    or fresh.phase is not Phase.RUNNING
                    or fresh.instance_id != rec.instance_id
                    or fresh.deleted
                ):
                    return
                old = HealthState.from_dict(fresh.health)
                new, changes = observe(old, check.outcome, now, self.policy, check.detail)
                delay = next_check_delay(new.failures, self.settings.agent.backoff)
                new = replace(new, next_check=now + delay if new.failures else 0.0)
                if check.outcome is Outcome.OK:  # readiness, restarts, probe events: never a failure
                    write_status(lock, fresh, check.status)
                if (
                    check.outcome is Outcome.OK
                    and is_paused(fresh.conditions)
                    and Change.RECOVERED not in changes
                ):
                    changes.append(Change.RECOVERED)  # the breaker had marked it Unknown
                self._write_health(lock, fresh, new, changes, now)
                if Change.FLAPPING in changes:
                    report.flapping.append(rec.uid)
                if Change.UNHEALTHY in changes:
                    report.unhealthy.append(rec.uid)
                if new.unhealthy and check.outcome is not Outcome.OK:  # just now, or deferred by the cap
                    if gate.take(now):
                        self._remediate(
                            lock, fresh, new, "Unhealthy", f"health checks failed: {check.detail}", report
                        )
                    else:
                        report.deferred.append(rec.uid)
                elif completed and fresh.restart_policy != "Always" and check.status is not None:
                    self._completed(lock, fresh, check.status, report)
        except LockBusy:
            report.busy += 1
        except StaleFence:
            report.busy += 1

    def _pause(self, rec: PodRecord, check: Check, report: SweepReport, gate: PassGate) -> None:
        """The open breaker holds this pod back: Healthy Unknown, counters from zero, no replacement."""
        report.paused.append(rec.uid)
        old = HealthState.from_dict(rec.health)
        reason, message = gate.breaker.reason, gate.breaker.message
        marked = [c for c in rec.conditions if c.get("type") == HEALTHY and c.get("reason") == reason]
        if is_paused(marked) and not (old.failures or old.unknowns or old.unhealthy):
            return  # already marked so: nothing to write
        now = self.clock()
        try:
            with self.store.locked(rec.uid, self.lock_ttl_ms) as lock:
                fresh = self.store.get(rec.uid)
                if fresh is None or fresh.phase is not Phase.RUNNING or fresh.instance_id != rec.instance_id:
                    return
                state = replace(
                    HealthState.from_dict(fresh.health),
                    failures=0,
                    unknowns=0,
                    unhealthy=False,
                    next_check=0.0,
                    last_checked=now,
                    last_result=check.outcome.value,
                    detail=check.detail,
                )
                conditions = paused_conditions(fresh.conditions, reason, f"{message} ({check.detail})", now)
                event = StatusEvent.of(
                    fresh, fresh.phase, reason=reason, message=message, warning=True, conditions=conditions
                )
                lock.write({"health": state.to_dict(), "conditions": conditions}, event, fresh.node)
        except (LockBusy, StaleFence):
            report.busy += 1

    def _write_health(
        self, lock: PodLock, rec: PodRecord, state: HealthState, changes: Iterable[Change], now: float
    ) -> None:
        conditions = with_conditions(rec.conditions, state, now)
        messages = {
            Change.UNHEALTHY: (
                f"pod is unhealthy after {state.failures} failed and {state.unknowns} "
                f"unknown checks: {state.detail}",
                True,
            ),
            Change.RECOVERED: ("health checks pass again", False),
            Change.FLAPPING: (
                f"health flapped {len(state.transitions)} times within "
                f"{self.policy.flapping_window_seconds:.0f}s; further changes are damped",
                True,
            ),
            Change.STOPPED_FLAPPING: ("health is stable again", False),
        }
        events = [
            StatusEvent.of(
                rec,
                rec.phase,
                reason=change.value,
                message=messages[change][0],
                warning=messages[change][1],
                conditions=conditions,
            )
            for change in changes
        ]
        values = {"health": state.to_dict(), "conditions": conditions}
        lock.write(values, events[0] if events else None, rec.node)
        for event in events[1:]:
            lock.write({}, event, rec.node)
        rec.conditions, rec.health = conditions, state.to_dict()

    def _remediate(
        self,
        lock: PodLock,
        rec: PodRecord,
        state: HealthState,
        reason: str,
        message: str,
        report: SweepReport,
    ) -> None:
        replaced = self.lifecycle.replace(lock, rec, reason, message)
        lock.write({"health": HealthState(remediations=state.remediations + 1).to_dict()})
        log.warning(
            "pod %s/%s (%s): %s: %s; %s",
            rec.namespace,
            rec.name,
            rec.uid,
            reason,
            message,
            "replacing its instance" if replaced else f"recorded {rec.phase.value}",
        )
        if replaced:
            report.remediated.append(rec.uid)
            self.publish(POD_CREATE, rec.uid)
        else:
            report.failed.append(rec.uid)

    def _completed(self, lock: PodLock, rec: PodRecord, status: AppStatus, report: SweepReport) -> None:
        """The lifecycle records Succeeded; when the instance is to be released, the chain resumes."""
        if self.lifecycle.completed(lock, rec, status) is not None:
            self.publish(POD_CREATE, rec.uid)
        report.succeeded.append(rec.uid)

    def _instance_lost(self, rec: PodRecord, reason: str, message: str, report: SweepReport) -> None:
        try:
            with self.store.locked(rec.uid, self.lock_ttl_ms) as lock:
                fresh = self.store.get(rec.uid)
                if fresh is None or fresh.instance_id != rec.instance_id or fresh.phase is not Phase.RUNNING:
                    return
                self._remediate(
                    lock,
                    fresh,
                    HealthState.from_dict(fresh.health),
                    reason,
                    message,
                    report,
                )
        except (LockBusy, StaleFence):
            report.busy += 1


def remediate_lost(sweep: HealthSweep, recs: Iterable[PodRecord], live: dict[str, Instance]) -> list[str]:
    """Hand Running pods whose instance is not among ``live`` to remediation (used by the orphan GC)."""
    report = SweepReport()
    for rec, reason, message in lost_pods(sweep.ec2, recs, live):  # a Spot interruption is named so
        try:
            sweep._instance_lost(rec, reason, message, report)
        except Vkec2Error as exc:
            log.warning("cannot remediate pod %s: %s", rec.uid, exc.message)
    return report.remediated + report.failed
