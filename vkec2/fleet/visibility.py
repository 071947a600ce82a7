"""A pod's instances on an eventually consistent EC2: when NotFound means "not yet", and letting go.

For seconds after RunInstances, EC2 may answer ``InvalidInstanceID.NotFound`` for the new instance
and leave it out of filtered listings. :class:`PodInstances` holds the rules the lifecycle applies
to that: an instance launched within ``ec2.visibility_window_seconds`` and not yet seen running is
*young* (NotFound means "not visible yet", never "gone"); TerminateInstances is sent only right
after the pod lock's guard, and a young instance EC2 does not know is not counted as terminated
(a retryable :class:`~vkec2.errors.Ec2Error`, reason ``InstanceNotYetVisible``, so the step runs
again later); and an abandoned attempt terminates every instance tagged with the pod's UID, not
only the recorded one.
"""

from __future__ import annotations

from vkec2.config import Settings
from vkec2.domain.models import PodRecord, now
from vkec2.errors import Ec2Error
from vkec2.ports import Ec2, PodLock

NOT_YET_VISIBLE = "InstanceNotYetVisible"


class PodInstances:
    """Terminating a pod's instances, aware of EC2's visibility lag."""

    def __init__(self, settings: Settings, ec2: Ec2) -> None:
        self.settings = settings
        self.ec2 = ec2

    def young(self, rec: PodRecord) -> bool:
        """The pod's instance was launched so recently, and not seen running yet (no agent endpoint
        was recorded), that EC2 may not know it yet: NotFound for it means "not visible yet", never
        "gone" — in whatever phase the pod is now (a delete seconds after the launch must still
        terminate it)."""
        window = self.settings.ec2.visibility_window_seconds
        return bool(rec.launched_at) and not rec.endpoint and now() - rec.launched_at < window

    def terminate(self, lock: PodLock, rec: PodRecord, instance_ids: list[str]) -> None:
        """TerminateInstances right after the lock's guard; the pod's own instance, if EC2 does not
        know it yet (young), is not counted as terminated: the step is retried later instead."""
        ids = [iid for iid in dict.fromkeys(instance_ids) if iid]
        if not ids:
            return
        lock.guard()
        self._not_yet_visible(rec, self.ec2.terminate(ids))

    def _not_yet_visible(self, rec: PodRecord, unknown: list[str]) -> None:
        """Raise a retryable error when EC2 did not know the pod's own young instance."""
        hidden = [iid for iid in unknown if iid == rec.instance_id and self.young(rec)]
        if hidden:
            raise Ec2Error(
                f"TerminateInstances: instance {hidden[0]} is not visible to EC2 yet "
                f"({self.settings.ec2.visibility_window_seconds:.0f}s window after its launch); retrying",
                code="InvalidInstanceID.NotFound",
                retryable=True,
                reason=NOT_YET_VISIBLE,
            )

    def terminate_soon(self, lock: PodLock, rec: PodRecord, instance_ids: list[str]) -> bool:
        """:meth:`terminate` in a call shared with other pods: False while it is not sent yet."""
        ids = [iid for iid in dict.fromkeys(instance_ids) if iid]
        if not ids:
            return True
        lock.guard()
        unknown = self.ec2.terminate_soon(ids)
        if unknown is None:
            return False
        self._not_yet_visible(rec, unknown)
        return True

    def abandon(self, lock: PodLock, rec: PodRecord, instance_id: str | None = None) -> list[str]:
        """Terminate everything the pod's attempt may have: the recorded instance, ``instance_id`` and
        every live instance tagged with the pod's UID (a launch EC2 did not list yet, a leftover).
        Returns the IDs terminated."""
        tagged = [i["InstanceId"] for i in self.ec2.find_pod_instances(rec.uid)]
        ids = [iid for iid in dict.fromkeys([instance_id or "", rec.instance_id, *tagged]) if iid]
        self.terminate(lock, rec, ids)
        return ids
