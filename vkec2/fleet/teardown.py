"""The end of a pod's instance, one short step at a time: deleting a pod and releasing a finished one.

A delete never holds a worker for the pod's grace period. Its first step sends TerminateApplication
with the grace period (the delete's ``deletionGracePeriodSeconds``, else the pod's, capped by
``agent.max_grace_seconds``; :func:`vkec2.domain.phases.grace_seconds`) asking the agent to answer at
once, records Terminating with the deadline, and returns the delay before the next step; each later
step asks the agent for the workload's status and, once the workload is gone or the grace period is
over, terminates the instance (in a TerminateInstances shared with the fleet's other deletes, polled
until it was sent) and records Terminated. A pod whose workload ended and will not run
again (:func:`vkec2.domain.phases.releases`) keeps its instance for ``agent.finished_keepalive_seconds``
(for ``kubectl logs``), then the instance is terminated and the pod keeps its final phase and
statuses, with ``InstanceReady`` False (reason ``InstanceReleased``). :class:`Teardown` decides none
of the phases itself: it writes through the lifecycle's one phase writer, handed to it as a
:class:`Recorder`, and the lifecycle delegates its delete and release steps to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from vkec2.config import Settings
from vkec2.domain import phases
from vkec2.domain.agents import AgentTarget, AppStatus
from vkec2.domain.models import Phase, PodRecord, now
from vkec2.errors import AgentError, AgentUnavailable
from vkec2.fleet.visibility import PodInstances
from vkec2.ports import Agents, PodLock

log = logging.getLogger("vkec2.fleet.lifecycle")

FIRST_POLL_SECONDS = 1.0
#: The reason of the InstanceReady condition (and of the event) once a finished pod's instance is gone.
RELEASED = "InstanceReleased"


class Recorder(Protocol):
    """The lifecycle's one phase writer (:meth:`vkec2.fleet.lifecycle.Lifecycle._record`)."""

    def __call__(
        self,
        lock: PodLock,
        rec: PodRecord,
        phase: Phase,
        *,
        reason: str = "",
        message: str = "",
        warning: bool = False,
        status: AppStatus | None = None,
        extra_conditions: Sequence[dict[str, Any]] = (),
        keep_status: bool = False,
        **values: Any,
    ) -> None: ...


def released_message(instance_id: str) -> str:
    """The message of the InstanceReady condition of a pod whose instance was released."""
    return f"instance {instance_id} terminated after the workload ended; its logs are gone"


class Teardown:
    """The delete and release steps of one fleet (see the module docstring)."""

    def __init__(self, settings: Settings, instances: PodInstances, agents: Agents, record: Recorder) -> None:
        self.settings = settings
        self.instances = instances
        self.agents = agents
        self.record = record

    def _cap(self, seconds: float) -> float:
        """A countdown no longer than the broker allows (``celery.max_countdown_seconds``)."""
        return float(min(self.settings.celery.max_countdown_seconds, max(0.0, seconds)))

    # -- finished pods ----------------------------------------------------------------------

    def keepalive(self, rec: PodRecord) -> float | None:
        """The delay before the release step of a pod that just finished, or None (nothing to release)."""
        if rec.released_at or not rec.instance_id or not phases.releases(rec.phase, rec.restart_policy):
            return None
        return self._cap(self.settings.agent.finished_keepalive_seconds) or FIRST_POLL_SECONDS / 10

    def release(self, lock: PodLock, rec: PodRecord) -> float | None:
        """Terminate a finished pod's instance once its keep-alive is over (rows L1, L2)."""
        if self.keepalive(rec) is None:
            return None
        due = (rec.finished_at or now()) + self.settings.agent.finished_keepalive_seconds
        if now() < due:
            return self._cap(due - now())
        self.instances.terminate(lock, rec, [rec.instance_id])
        self.record(
            lock,
            rec,
            rec.phase,
            reason=RELEASED,
            message=released_message(rec.instance_id),
            keep_status=True,
            released_at=now(),
        )
        return None

    # -- delete -----------------------------------------------------------------------------

    def delete(self, lock: PodLock, rec: PodRecord, generation: int | None = None) -> float | None:
        """One step of a delete (rows D1 to D5); the delay before the next step, or None when done."""
        if generation is not None and not rec.deleted and generation < rec.generation:
            return None  # the pod was desired again after this delete was issued
        if rec.phase is Phase.TERMINATED:
            return None
        if rec.phase is Phase.TERMINATING and rec.grace_deadline:
            return self._await_stop(lock, rec)
        return self._stop(lock, rec)

    def _stop(self, lock: PodLock, rec: PodRecord) -> float | None:
        """Ask the agent to stop the workload within the grace period, without waiting for it."""
        runs = bool(rec.endpoint and rec.instance_id) and not rec.phase.final and not rec.released_at
        grace = phases.grace_seconds(rec.spec, rec.deletion_grace, self.settings.agent.max_grace_seconds)
        sent = False
        if runs:
            try:
                self.agents.terminate(self._target(rec), grace, wait=False)
                sent = True
            except AgentError as exc:
                log.info(
                    "TerminateApplication on %s failed (%s); terminating the instance anyway",
                    rec.instance_id,
                    exc.message,
                )
        deadline = now() + grace if sent else 0.0
        if rec.phase is not Phase.TERMINATING:
            message = f"stopping the workload (grace period {grace}s)" if sent else "deleting the pod"
            self.record(
                lock, rec, Phase.TERMINATING, reason="Killing", message=message, grace_deadline=deadline
            )
        elif sent:
            lock.write({"grace_deadline": deadline})
            rec.grace_deadline = deadline
        if not sent or grace <= 0:
            return self._finish(lock, rec)
        return self._cap(min(FIRST_POLL_SECONDS, grace))

    def _await_stop(self, lock: PodLock, rec: PodRecord) -> float | None:
        """Poll the workload until it is gone or the grace period is over, then terminate the instance."""
        left = rec.grace_deadline - now()
        if left <= 0:
            return self._finish(lock, rec, "the grace period is over")
        try:
            status = self.agents.status(self._target(rec))
        except AgentUnavailable:
            return self._poll(left)  # a blip: the workload was told to stop; wait out the grace period
        except AgentError as exc:
            return self._finish(lock, rec, f"the agent cannot report the workload: {exc.message}")
        settled = phases.from_agent(status.phase)
        if (settled is not None and settled.final) or not status.phase:
            return self._finish(lock, rec, "the workload stopped")
        return self._poll(left)

    def _poll(self, left: float) -> float:
        """Poll every second at first, then a tenth of what is left, never past the deadline."""
        return self._cap(min(left, max(FIRST_POLL_SECONDS, left / 10)))

    def _finish(self, lock: PodLock, rec: PodRecord, why: str = "") -> float | None:
        """Terminate the pod's instance and record Terminated: the delete is done (or poll again
        while the shared TerminateInstances that will name the instance is not sent yet).

        The recorded instance is the pod's only one (an abandoned attempt already terminated every
        instance tagged with the UID); with none recorded but a launch sent (its answer was lost),
        every live instance tagged with the UID is looked up and terminated.
        """
        if rec.instance_id:
            ids = [rec.instance_id]
            if not self.instances.terminate_soon(lock, rec, ids):
                # Shared with the fleet's other terminations: sent within the batch window.
                return self._cap(max(FIRST_POLL_SECONDS, self.settings.aws.terminate_batch_window_seconds))
        elif rec.launch_token:
            ids = self.instances.abandon(lock, rec)
        else:
            ids = []
        done = f"instance {', '.join(ids)} terminated" if ids else "no instance to terminate"
        self.record(
            lock, rec, Phase.TERMINATED, reason="Terminated", message=f"{why}: {done}" if why else done
        )
        return None

    @staticmethod
    def _target(rec: PodRecord) -> AgentTarget:
        return AgentTarget(endpoint=rec.endpoint, instance_id=rec.instance_id)
