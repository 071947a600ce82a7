"""The pod lifecycle, one step at a time: what a create, update or delete task does while it holds the lock.

Each method takes the held :class:`~vkec2.ports.PodLock` and the fresh :class:`~vkec2.models.PodRecord`,
advances the pod by one step of the state machine (Pending → Provisioning → Booting → Launching →
Running; any → Terminating → Terminated), writes the new state with the lock's fence and appends a
status event, and returns how long to wait before the next step (``None`` when there is none). It
never blocks on a long wait: a Mac that takes minutes to boot costs a handful of short steps, not a
worker. The delete and the release of a finished pod's instance are steps too
(:mod:`vkec2.fleet.teardown`, writing through the same :meth:`Lifecycle._record`, the one place
that writes a phase). Nothing here knows Celery; :mod:`tasks.pods` schedules the steps.

Exactly one instance on a real, eventually consistent EC2: the launch intent (the attempt's
ClientToken) is recorded before RunInstances and an instance's ID right after it is launched or
claimed, before any other call on it, so a step that stops half-way is continued with the same
instance; an instance EC2 does not know within ``ec2.visibility_window_seconds`` of its launch is
pending, never gone; every side effect (claim, CreateTags, RunInstances, TerminateInstances) is
preceded by the lock's guard, which extends the lock only while this task still owns the pod; and
an abandoned attempt terminates every instance tagged with the pod's UID.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from vkec2.config import Settings
from vkec2.contract import (
    AGENT_INSTALL_FAILED,
    IMAGE_MAPPED,
    POOL_CLAIMED,
    TAG_POOL_STATE,
    UNMAPPED_IMAGE,
)
from vkec2.domain import phases
from vkec2.domain.agents import AgentTarget, AgentTrust, AppStatus, resolve_endpoint
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase, PodRecord, condition, now
from vkec2.errors import AgentError, AgentRejected, AgentUnavailable, Ec2Error, InvalidPodSpec
from vkec2.fleet.batchlaunch import BatchLaunch
from vkec2.fleet.capacity import CapacityLaunch, NoCapacity
from vkec2.fleet.choice import InstanceChoice, placed
from vkec2.fleet.installcheck import InstallCheck
from vkec2.fleet.launchslot import launch_intent, pod_slot
from vkec2.fleet.phasewrite import record_phase
from vkec2.fleet.placement import HostPlacement
from vkec2.fleet.rebuild import Rebuild
from vkec2.fleet.teardown import Recorder, Teardown
from vkec2.fleet.update import InPlaceUpdate, refresh_volumes
from vkec2.fleet.visibility import PodInstances
from vkec2.ports import Agents, Ec2, LaunchStore, LaunchTokens, PodLock

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 1.0
WORKLOAD_POLL_SECONDS = 0.1  # the first poll of an accepted workload
#: A job's workload seen Running sooner than this after its launch is asked once more then: a short
#: job's end is seen by its own chain, not left to the health sweep.
CONFIRM_AFTER_SECONDS = 1.0
IDEMPOTENT_MISMATCH = "IdempotentParameterMismatch"


class Lifecycle:
    """Carries pods through their phases using EC2, the agents and the store."""

    def __init__(
        self,
        settings: Settings,
        store: LaunchStore,
        ec2: Ec2,
        agents: Agents,
        bootstrap: Callable[[AgentTarget, str], None] | None = None,
        *,
        trust: Callable[[str], AgentTrust] | None = None,
        tokens: LaunchTokens | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.agents = agents
        self.bootstrap = bootstrap  # (target, the launch's ClientToken): the agent to mTLS
        hosts = HostPlacement(settings, store, ec2, trust)  # host-pool pods (vkec2.fleet.placement)
        self.capacity = CapacityLaunch(settings, store, ec2, trust, hosts)
        self.choice = InstanceChoice(settings, ec2)  # the pod's selector and requests pick its type
        self.pod_instances = PodInstances(settings, ec2)
        self._record: Recorder = record_phase  # the one phase writer (vkec2.fleet.phasewrite)
        self.teardown = Teardown(settings, self.pod_instances, agents, self._record)
        self.rebuild = Rebuild(settings, ec2, agents, self.pod_instances, self._record)
        self.updates = InPlaceUpdate(ec2, self.choice, self._record)
        self.install_check = InstallCheck(ec2)  # the installer's failure marker on the console
        self.batches: BatchLaunch | None = None  # cold launches in batched RunInstances (tasks.runtime)
        self.tokens = tokens  # the fleet's RunInstances budget, reserved so no thread waits on it

    # -- helpers ------------------------------------------------------------------------

    def _target(self, rec: PodRecord) -> AgentTarget:
        return AgentTarget(endpoint=rec.endpoint, instance_id=rec.instance_id)

    def _poll_delay(self, rec: PodRecord, *, workload: bool = False) -> float:
        """Back off while waiting: poll quickly at first (an accepted workload from its launch at
        :data:`WORKLOAD_POLL_SECONDS`, else from the instance's), then up to the configured maximum."""
        since = rec.launching_at if workload else rec.launched_at
        waited = max(0.0, now() - since) if since else 0.0
        first = WORKLOAD_POLL_SECONDS if workload else FIRST_POLL_SECONDS
        return float(min(self.settings.celery.max_countdown_seconds, first + waited / 10))

    def _note_instance(self, lock: PodLock, rec: PodRecord, instance: Instance) -> None:
        """Record the pod's new instance (launched or claimed) before any other call on it."""
        fields = {
            "instance": instance,
            "instance_id": instance["InstanceId"],
            "launched_at": rec.launched_at or now(),
        }
        lock.write(fields)
        for key, value in fields.items():
            setattr(rec, key, value)

    def _adopt(self, lock: PodLock, rec: PodRecord, instance: Instance, how: str) -> float | None:
        state = instance.get("State", {}).get("Name", "pending")
        fields: dict[str, Any] = {
            "instance": instance,
            "instance_id": instance["InstanceId"],
            "launched_at": rec.launched_at or now(),
        }
        message = f"{how} instance {instance['InstanceId']} ({placed(instance)})"
        if state == "running":
            return self._on_running(lock, rec, instance, message, fields)
        self._record(lock, rec, Phase.PROVISIONING, reason=how.capitalize(), message=message, **fields)
        return FIRST_POLL_SECONDS

    def _on_running(
        self, lock: PodLock, rec: PodRecord, instance: Instance, message: str, fields: dict[str, Any]
    ) -> float | None:
        try:
            endpoint = resolve_endpoint(self.settings.agent, instance)
        except AgentUnavailable as exc:
            return self._retry_or_fail(
                lock, rec, "NoAgentEndpoint", exc.message, instance_id=instance["InstanceId"]
            )
        self._record(
            lock,
            rec,
            Phase.BOOTING,
            reason="InstanceRunning",
            message=message,
            endpoint=endpoint,
            **{**fields, "instance": instance},
        )
        return self._await_agent(lock, rec)

    def _retry_or_fail(
        self, lock: PodLock, rec: PodRecord, reason: str, message: str, instance_id: str | None = None
    ) -> float | None:
        """Clean up what this attempt created, then try again or fail per restartPolicy."""
        self.pod_instances.abandon(lock, rec, instance_id)
        attempts = rec.attempt + 1
        if rec.restart_policy == "Never" or attempts >= self.settings.max_attempts:
            self._record(
                lock,
                rec,
                Phase.FAILED,
                reason=reason,
                warning=True,
                message=f"{message} (attempt {attempts} of {self.settings.max_attempts}; giving up)",
                attempt=attempts,
            )
            return None
        self._record(
            lock,
            rec,
            Phase.PENDING,
            reason=reason,
            warning=True,
            message=f"{message}; retrying (attempt {attempts + 1} of {self.settings.max_attempts})",
            **phases.new_attempt(attempts),
        )
        return FIRST_POLL_SECONDS

    def fail(self, lock: PodLock, rec: PodRecord, reason: str, message: str) -> None:
        """Fail the pod at once (an error that retrying cannot fix), cleaning up its instances."""
        self.pod_instances.abandon(lock, rec)
        self._record(lock, rec, Phase.FAILED, reason=reason, message=message, warning=True)

    def replace(self, lock: PodLock, rec: PodRecord, reason: str, message: str) -> bool:
        """Remediate a pod whose instance is lost or broken, per its restartPolicy.

        Always/OnFailure: terminate the instance and start a fresh attempt from Pending (the
        caller then publishes ``vkec2.pods.create``); returns True. Never: the pod fails; False.
        """
        if rec.deleted or rec.phase in (Phase.TERMINATING, Phase.TERMINATED):
            return False
        self.pod_instances.abandon(lock, rec)
        if rec.restart_policy == "Never":
            released_at = now() if rec.instance_id else 0.0
            self._record(
                lock, rec, Phase.FAILED, reason=reason, message=message, warning=True, released_at=released_at
            )
            return False
        self._record(
            lock,
            rec,
            Phase.PENDING,
            reason=reason,
            warning=True,
            message=f"{message}; replacing the instance",
            **phases.new_attempt(rec.attempt + 1),
        )
        return True

    # -- create -------------------------------------------------------------------------

    def create_step(self, lock: PodLock, rec: PodRecord) -> float | None:
        """Advance a pod towards Running by one step; the delay before the next, or None.

        A finished pod's chain goes on to release its instance (:meth:`Teardown.release`).
        """
        if rec.deleted:
            return None
        if rec.phase.final:
            return self.teardown.release(lock, rec)
        if rec.phase is Phase.RUNNING:
            return self._confirm_running(lock, rec)
        if not rec.phase.creating:
            return None
        if rec.phase is Phase.PENDING:
            return self._provision(lock, rec)
        if self.batches is not None and rec.launch_batch and rec.endpoint:  # EC2 showed it running:
            self.batches.pod_tags.retry(rec.instance_id)  # its pod tags, if still to be written
        if rec.phase is Phase.PROVISIONING:
            return self._await_running(lock, rec)
        if rec.phase is Phase.BOOTING:
            return self._await_agent(lock, rec)
        return self._await_workload(lock, rec)

    def _provision(self, lock: PodLock, rec: PodRecord) -> float | None:
        try:
            params = self.choice.params(rec.spec)
        except InvalidPodSpec as exc:
            self._record(lock, rec, Phase.FAILED, reason=exc.reason, message=exc.message, warning=True)
            return None
        told = any(c.get("type") == IMAGE_MAPPED for c in rec.conditions)
        if params.image_note and not told and not rec.rebuilt:
            # An image the table does not map: said once per attempt; the pod runs on the default AMI
            # (never for a rebuilt record: its pod may be running, and must not look Pending again).
            unmapped = condition(IMAGE_MAPPED, False, UNMAPPED_IMAGE, params.image_note)
            note = f"{params.image_note}; launching {params.image_id or 'the launch template AMI'}"
            self._record(
                lock,
                rec,
                Phase.PENDING,
                reason=UNMAPPED_IMAGE,
                message=note,
                warning=True,
                extra_conditions=[unmapped],
            )
        if rec.rebuilt:  # row C27 (vkec2.fleet.rebuild): re-created after Redis lost its data
            rebuilt = self.rebuild.step(lock, rec)
            if rebuilt.settled:
                return self.teardown.keepalive(rec)
            if rebuilt.instance is not None:
                return self._adopt(lock, rec, rebuilt.instance, "adopted")
        tags = self.ec2.pod_tags(rec.spec, rec.node)
        launched = self.capacity.sent(rec, params) or bool(rec.launch_batch)
        if rec.instance_id:  # a step recorded this attempt's instance, then stopped before its phase
            if rec.launch_batch and self.batches is not None:
                self.batches.adopted(rec, rec.instance or {"InstanceId": rec.instance_id}, tags)
            elif not launched:  # claimed from a warm pool: its pod tags may not have been written
                lock.guard()
                self.ec2.create_tags([rec.instance_id], {**tags, TAG_POOL_STATE: POOL_CLAIMED})
            return self._adopt(lock, rec, rec.instance or {"InstanceId": rec.instance_id}, "recovered")
        if not launched:  # no RunInstances sent for this attempt yet: adopt by tag, or claim
            # A pod's very first attempt has launched nothing anywhere (every launch records its
            # intent first): only a later attempt or life looks for what an earlier one left.
            found = self.ec2.find_pod_instances(rec.uid) if rec.attempt > 0 else []
            existing = sorted(found, key=lambda i: str(i.get("LaunchTime", "")))
            if existing:
                keep, extra = existing[0], existing[1:]
                # never two instances for one pod: keep the oldest
                self.pod_instances.terminate(lock, rec, [i["InstanceId"] for i in extra])
                return self._adopt(lock, rec, keep, "adopted")
            if params.warm_pool:
                lock.guard()
                claimed = self.store.claim_ready(params.warm_pool)
                if claimed is not None:
                    instance_id, instance = claimed
                    self._note_instance(lock, rec, instance)
                    lock.guard()
                    self.ec2.create_tags([instance_id], {**tags, TAG_POOL_STATE: POOL_CLAIMED})
                    return self._adopt(lock, rec, instance, f"claimed from warm pool {params.warm_pool}")

        if self.batches is not None:  # cold launches of pods alike go in one RunInstances
            batched = self.batches.step(lock, rec, params, tags)
            if isinstance(batched, float):
                return min(batched, self.settings.celery.max_countdown_seconds)
            if batched is not None:
                self.batches.adopted(rec, batched, tags)
                self._note_instance(lock, rec, batched)
                return self._adopt(lock, rec, batched, "launched")
        wait = pod_slot(self.tokens, lock, rec)  # no thread waits for RunInstances tokens
        if wait > 0:  # come back when the tokens exist (or sooner: a countdown has a ceiling)
            return min(wait, self.settings.celery.max_countdown_seconds)

        try:
            with self.tokens.prepaid("RunInstances") if self.tokens else nullcontext():
                outcome = self.capacity.launch(lock, rec, params, tags, launch_intent(lock, rec))
        except Ec2Error as exc:  # the token was sent with other parameters: a fresh attempt, fresh token
            if exc.code != IDEMPOTENT_MISMATCH:
                raise
            return self._retry_or_fail(lock, rec, IDEMPOTENT_MISMATCH, exc.message)
        if isinstance(outcome, NoCapacity):
            return self._no_capacity(lock, rec, outcome)
        self._note_instance(lock, rec, outcome)
        return self._adopt(lock, rec, outcome, "launched")

    def _no_capacity(self, lock: PodLock, rec: PodRecord, outcome: NoCapacity) -> float | None:
        """No candidate had capacity: wait in Pending, or fail after the deadline (vkec2.fleet.capacity)."""
        verdict = self.capacity.verdict(rec, outcome)
        if verdict.write:
            self._record(
                lock,
                rec,
                verdict.phase,
                reason=verdict.reason,
                message=verdict.message,
                warning=True,
                extra_conditions=verdict.conditions,
                **verdict.fields,
            )
        return verdict.delay

    def _await_running(self, lock: PodLock, rec: PodRecord) -> float | None:
        instance = self.ec2.describe([rec.instance_id]).get(rec.instance_id)
        if instance is None and self.pod_instances.young(rec):
            return self._poll_delay(rec)  # EC2 does not show a new instance at once: pending, not gone
        state = instance.get("State", {}).get("Name") if instance else phases.GONE
        if instance is None or phases.instance_lost(state):
            return self._retry_or_fail(
                lock, rec, "InstanceLost", f"instance {rec.instance_id} is {state} before the pod started"
            )
        if state != "running":
            return self._poll_delay(rec)
        return self._on_running(
            lock, rec, instance, f"instance {rec.instance_id} is running", {"instance": instance}
        )

    def _boot_expired(self, rec: PodRecord) -> bool:
        return bool(rec.launched_at) and now() - rec.launched_at > self.settings.agent.boot_timeout_for(
            rec.instance_type
        )

    def _await_agent(self, lock: PodLock, rec: PodRecord) -> float | None:
        target = self._target(rec)
        try:
            serving = self.agents.serving(target)
        except AgentError:  # a health check that fails in any way is "not serving yet"
            serving = False
        if not serving:
            failure = self.install_check.failure(rec)
            if failure is not None:  # retrying the same installer cannot help: fail at once
                self.fail(
                    lock, rec, AGENT_INSTALL_FAILED, f"agent install on {rec.instance_id} failed: {failure}"
                )
                return None
            if self._boot_expired(rec):
                return self._retry_or_fail(
                    lock,
                    rec,
                    "AgentBootTimeout",
                    f"agent at {rec.endpoint} for {rec.instance_id} did not answer within "
                    f"{self.settings.agent.boot_timeout_for(rec.instance_type):.0f}s",
                )
            return self._poll_delay(rec)
        try:
            if self.bootstrap is not None:
                self.bootstrap(target, str(rec.instance.get("ClientToken") or rec.launch_token))
            self.agents.launch(target, rec.spec)
        except AgentRejected as exc:
            return self._retry_or_fail(lock, rec, exc.reason, f"agent refused the pod: {exc.message}")
        except AgentError as exc:  # unavailable, or failing internally: maybe transient, within bounds
            if self._boot_expired(rec):
                return self._retry_or_fail(
                    lock, rec, "AgentBootTimeout", f"agent at {rec.endpoint} failed the launch: {exc.message}"
                )
            return self._poll_delay(rec)
        self._record(
            lock,
            rec,
            Phase.LAUNCHING,
            reason="AgentConnected",
            message=f"workload sent to the agent at {rec.endpoint}",
        )
        # The status is asked in the next step (each phase keeps its own step and event for the
        # producer); a job that then reads Running is asked once more (_confirm_running).
        return WORKLOAD_POLL_SECONDS

    def _await_workload(self, lock: PodLock, rec: PodRecord) -> float | None:
        try:
            status = self.agents.status(self._target(rec))
        except AgentRejected as exc:  # e.g. the workload unknown, or another instance's agent
            return self._retry_or_fail(
                lock, rec, exc.reason, f"agent refused the status check: {exc.message}"
            )
        except AgentError as exc:  # unavailable, or failing internally: maybe transient, within bounds
            if self._boot_expired(rec):
                return self._retry_or_fail(
                    lock, rec, "AgentLost", f"agent at {rec.endpoint} stopped answering: {exc.message}"
                )
            return self._poll_delay(rec, workload=True)
        phase = phases.from_agent(status.phase)
        if phase is None:
            return self._poll_delay(rec, workload=True)
        return self._settle(lock, rec, phase, status)

    def _confirm_running(self, lock: PodLock, rec: PodRecord) -> float | None:
        """The one more status poll of a job (restartPolicy Never or OnFailure) seen Running just after
        its launch: a job that ended since is recorded by its chain. Any other step on a Running pod
        does nothing (the health sweep watches it, and restarts or replaces an Always pod), and so
        does an agent that does not answer now (row C32)."""
        late = now() - rec.launching_at > 2 * CONFIRM_AFTER_SECONDS + FIRST_POLL_SECONDS
        if not self._confirms(rec) or late:
            return None
        try:
            status = self.agents.status(self._target(rec))
        except AgentError:
            return None
        phase = phases.from_agent(status.phase)
        return self._settle(lock, rec, phase, status) if phase is not None and phase.final else None

    def _settle(self, lock: PodLock, rec: PodRecord, phase: Phase, status: AppStatus) -> float | None:
        """Record the phase the agent's status settles the pod in; the delay before its next step:
        the confirming poll of a just-started job, a finished pod's release, or None."""
        self._record(
            lock,
            rec,
            phase,
            reason=status.reason or ("Started" if phase is Phase.RUNNING else ""),
            message=status.message,
            warning=phase is Phase.FAILED,
            status=status,
        )
        if phase is Phase.RUNNING:  # rows C14, C31
            confirm = rec.launching_at + CONFIRM_AFTER_SECONDS - now() if self._confirms(rec) else 0.0
            return confirm if confirm > 0 else None
        return self.teardown.keepalive(rec)  # a finished pod's instance is released after it

    @staticmethod
    def _confirms(rec: PodRecord) -> bool:
        """Whether a Running pod's chain confirms its workload once more: a job (restartPolicy Never
        or OnFailure) whose launch time is known; an Always pod is the health sweep's."""
        return rec.restart_policy != "Always" and bool(rec.launching_at)

    def completed(self, lock: PodLock, rec: PodRecord, status: AppStatus) -> float | None:
        """The health sweep saw a Running pod's workload complete: record Succeeded.

        Returns the delay before the release of its instance (the caller restarts the pod's chain
        with a create), or None when there is nothing to release.
        """
        self._record(
            lock,
            rec,
            Phase.SUCCEEDED,
            reason=status.reason or "Completed",
            message=status.message or "the workload completed",
            status=status,
        )
        return self.teardown.keepalive(rec)

    # -- update -------------------------------------------------------------------------

    def update(self, lock: PodLock, rec: PodRecord) -> None:
        """Apply spec changes that can change in place (tags, volume files); see :mod:`vkec2.fleet.update`."""
        self.updates.apply(lock, rec)
        if rec.instance_id:
            refresh_volumes(self.agents, self._target(rec), rec)

    # -- delete -------------------------------------------------------------------------

    def delete(self, lock: PodLock, rec: PodRecord, generation: int | None = None) -> float | None:
        """One step of a delete (delete wins); the delay before the next step, or None when done.

        See :meth:`vkec2.fleet.teardown.Teardown.delete`: the workload is asked to stop within its
        grace period without holding the worker, then the instance is terminated.
        """
        if self.batches is not None:  # a batch member's instance is known before the delete goes on
            wait = self.batches.settle(lock, rec, lambda instance: self._note_instance(lock, rec, instance))
            if wait is not None:
                return wait
        return self.teardown.delete(lock, rec, generation)
