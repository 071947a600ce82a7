"""The rules of a pod's phases, each in one place: which phases end a pod, start it, or make it forgettable.

:class:`Phase` is the fleet's lifecycle (finer than Kubernetes' pod phases; see docs/architecture.md
for the state machine). Around it live the rules the workers, the health sweep, the store and the
producer all apply: the phases in which a pod is still being created or has finished, when a pod's
record is done with (deleted and Terminated, so it may be forgotten), when its workload has or may
have been started, which Kubernetes phases a pod never leaves, how the agent's workload phase maps
to a fleet phase, which EC2 instance states mean the pod's instance is lost, which record fields a
new attempt or a new life of the pod starts without, which timestamps a phase change stamps
into the record so the phases can be timed, when a finished pod's instance may be released, and
how long a delete's grace period is. Everything here is a pure function of plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final


class Phase(StrEnum):
    """The fleet's lifecycle phases of a pod (finer than Kubernetes' pod phases)."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    BOOTING = "Booting"
    LAUNCHING = "Launching"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"

    @property
    def k8s_phase(self) -> str:
        """The Kubernetes pod phase this fleet phase is reported as."""
        if self in (Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED):
            return self.value
        if self is Phase.TERMINATED:
            return "Succeeded"
        if self is Phase.TERMINATING:
            return "Running"
        return "Pending"

    @property
    def creating(self) -> bool:
        """True while the create chain still has steps to take."""
        return self in CREATING_PHASES

    @property
    def final(self) -> bool:
        """True once the workload has ended (it runs no more and needs no further create step)."""
        return self in FINAL_PHASES


#: The create chain still has steps to take.
CREATING_PHASES: Final = frozenset({Phase.PENDING, Phase.PROVISIONING, Phase.BOOTING, Phase.LAUNCHING})
#: The workload has ended: it runs no more and needs no further create step. A deleted pod in
#: one of these may be desired again (same UID) and starts a fresh life (:data:`LIFE_FIELDS`).
FINAL_PHASES: Final = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.TERMINATED})
#: The workload has been started on the pod's instance.
STARTED_PHASES: Final = frozenset({Phase.RUNNING, Phase.SUCCEEDED})
#: The pod has an instance of its own (launched, adopted or claimed from a warm pool).
PROVISIONED_PHASES: Final = frozenset({Phase.PROVISIONING, Phase.BOOTING, Phase.LAUNCHING, Phase.RUNNING})

#: Kubernetes pod phases a pod never leaves: its status never regresses from them, and a pod
#: first seen in one of them is never started again (a finished pod is never started again).
K8S_FINISHED: Final = ("Succeeded", "Failed")


def done(phase: Phase, deleted: bool) -> bool:
    """The delete of the pod finished: its record may be forgotten once no pod object needs it."""
    return deleted and phase is Phase.TERMINATED


def deleting(phase: Phase, deleted: bool) -> bool:
    """A delete was requested and has not finished yet (its task still has work to do)."""
    return deleted and phase is not Phase.TERMINATED


def may_have_started(phase: Phase, has_endpoint: bool) -> bool:
    """The workload has, or may have, been started: it is Running or Succeeded, or was handed to the
    agent (Launching, or Terminating with an agent endpoint) and may be starting right now."""
    if phase in STARTED_PHASES or phase is Phase.LAUNCHING:
        return True
    return phase is Phase.TERMINATING and has_endpoint


def first_provisioned(previous: Phase, phase: Phase, attempt: int) -> bool:
    """This change gave the pod its first instance ever (counted once per pod, not per attempt)."""
    return previous is Phase.PENDING and attempt == 0 and phase in PROVISIONED_PHASES


def phase_stamps(previous: Phase, phase: Phase, at: float) -> dict[str, float]:
    """The record fields a change from ``previous`` to ``phase`` at ``at`` stamps, to time the phases.

    Booting stamps ``running_at`` (the instance runs), Launching ``launching_at`` (the agent took
    the workload); with ``launched_at`` (the instance was launched) they time boot, agent
    readiness and launch. Succeeded and Failed stamp ``finished_at``, from which the keep-alive of
    a finished pod's instance is counted (:func:`releases`).
    """
    if phase is previous:
        return {}
    if phase is Phase.BOOTING:
        return {"running_at": at}
    if phase is Phase.LAUNCHING:
        return {"launching_at": at}
    if phase in (Phase.SUCCEEDED, Phase.FAILED):
        return {"finished_at": at}
    return {}


# -- the agent's view ----------------------------------------------------------------------------

#: The agent's workload phase while the workload is still starting (a Kubernetes pod phase).
AGENT_PENDING: Final = "Pending"
_SETTLED_BY_AGENT: Final = {"Running": Phase.RUNNING, "Succeeded": Phase.SUCCEEDED, "Failed": Phase.FAILED}


def from_agent(agent_phase: str) -> Phase | None:
    """The fleet phase the agent's workload phase settles the pod in; None while it is still
    starting (Pending), when the agent runs no workload (empty) or reports anything else."""
    return _SETTLED_BY_AGENT.get(agent_phase)


# -- EC2 instance states -------------------------------------------------------------------------

#: The state of an instance that DescribeInstances no longer returns.
GONE: Final = "gone"
#: Instance states in which the pod's instance is lost: it will not run the workload again.
LOST_INSTANCE_STATES: Final = frozenset({"shutting-down", "terminated", "stopping", "stopped", GONE})


def instance_lost(state: str | None) -> bool:
    """The pod's instance, in EC2 state ``state`` (:data:`GONE` when not found), is lost."""
    return state in LOST_INSTANCE_STATES


# -- attempts and lives ----------------------------------------------------------------------------


def new_attempt(attempt: int) -> dict[str, Any]:
    """The record values that start attempt ``attempt`` from Pending without the last one's instance."""
    return {
        "attempt": attempt,
        "instance": {},
        "instance_id": "",
        "endpoint": "",
        "launched_at": 0.0,
        "launch_batch": "",
        "launch_slot": 0.0,
    }


#: The fields :func:`new_attempt` resets: what one attempt's instance leaves in the record.
ATTEMPT_FIELDS: Final = tuple(key for key in new_attempt(0) if key != "attempt")
#: The fields a pod record drops when the pod is desired again after its delete finished (same
#: UID, phase in :data:`FINAL_PHASES`): the attempt's, plus the status and the end of its previous
#: life. The store's desired-state write (``PUT_DESIRED`` in :mod:`vkec2.store.scripts`, which is
#: handed this tuple and :data:`FINAL_PHASES` as arguments) deletes exactly these and restarts the
#: record at Pending, attempt 0.
LIFE_FIELDS: Final = (
    *ATTEMPT_FIELDS,
    "next_task",
    "reason",
    "message",
    "conditions",
    "container_statuses",
    "health",
    "finished_at",
    "released_at",
    "grace_deadline",
    "deletion_grace",
    "host_pool",
    "host_id",
)


# -- the end of a pod: releasing a finished pod's instance, the grace period of a delete -------------

#: The grace period of a pod that names none (Kubernetes' default).
DEFAULT_GRACE_SECONDS: Final = 30


def releases(phase: Phase, restart_policy: str) -> bool:
    """The workload ended in ``phase`` and, per ``restart_policy``, will never run again, so its
    instance may be released (terminated): Succeeded unless Always, Failed under Never."""
    if phase is Phase.SUCCEEDED:
        return restart_policy != "Always"
    return phase is Phase.FAILED and restart_policy == "Never"


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds == seconds else None  # NaN is no number of seconds


def grace_seconds(pod: Mapping[str, Any], requested: float | None, cap: float) -> int:
    """The grace period of a pod's delete, in whole seconds, never above ``cap``.

    The delete's own (``requested``: ``metadata.deletionGracePeriodSeconds`` of the pod object as
    the producer recorded it with the delete), else the stored pod's
    ``metadata.deletionGracePeriodSeconds``, else ``spec.terminationGracePeriodSeconds``, else
    :data:`DEFAULT_GRACE_SECONDS`. Negative values count as 0; a huge one (``1e16``) is capped, so
    no deadline derived from it overflows.
    """
    candidates = (
        requested,
        (pod.get("metadata") or {}).get("deletionGracePeriodSeconds"),
        (pod.get("spec") or {}).get("terminationGracePeriodSeconds"),
    )
    for raw in candidates:
        if raw is not None and (seconds := _seconds(raw)) is not None:
            return int(min(max(0.0, seconds), max(0.0, cap)))
    return int(min(DEFAULT_GRACE_SECONDS, max(0.0, cap)))
