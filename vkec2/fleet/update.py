"""In-place updates of a pod's instance: what a spec change can change without a new instance.

When a running pod's spec changes, :meth:`InPlaceUpdate.apply` works out the launch parameters the
pod would get now (:meth:`vkec2.fleet.choice.InstanceChoice.launched_with`, which keeps the type
it launched with when that is still one of its choices) and compares them with the instance:
changed user tags are written with CreateTags and recorded (reason ``Updated``); a changed image
or instance type cannot change in place, so the pod records ``ReplacementNeeded`` (a Warning) and
keeps running until the user re-creates it; a spec that no longer validates records its reason
and changes nothing. The lifecycle's update step is this (:meth:`vkec2.fleet.lifecycle.Lifecycle.update`),
then :func:`refresh_volumes`: a running pod whose sealed ConfigMap/Secret content changed gets it
through UpdateVolumes (the agent swaps the files; env stays as launched). An unreachable agent retries
the step later (AgentUnavailable is retryable); an agent that refuses keeps the old files until the
next change, and the refusal is logged.
"""

from __future__ import annotations

import logging

from vkec2.contract import RESOLVED_FIELD
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import Phase, PodRecord
from vkec2.errors import AgentError, AgentUnavailable, InvalidPodSpec
from vkec2.fleet.choice import InstanceChoice
from vkec2.fleet.teardown import Recorder
from vkec2.ports import Agents, Ec2, PodLock

log = logging.getLogger(__name__)


def refresh_volumes(agents: Agents, target: AgentTarget, rec: PodRecord) -> None:
    """Row U4: send a Launching/Running pod's sealed ConfigMap/Secret content with UpdateVolumes."""
    if rec.deleted or RESOLVED_FIELD not in rec.spec or rec.phase not in (Phase.LAUNCHING, Phase.RUNNING):
        return
    try:
        changed = agents.update_volumes(target, rec.spec)
    except AgentUnavailable:
        raise
    except AgentError as exc:
        log.warning("pod %s: volume update on %s failed: %s", rec.uid, rec.instance_id, exc)
        return
    if changed:
        log.info("pod %s: volumes %s updated on %s", rec.uid, ", ".join(changed), rec.instance_id)


class InPlaceUpdate:
    """The update step of one fleet (see the module docstring)."""

    def __init__(self, ec2: Ec2, choice: InstanceChoice, record: Recorder) -> None:
        self.ec2 = ec2
        self.choice = choice
        self.record = record

    def apply(self, lock: PodLock, rec: PodRecord) -> None:
        """Apply spec changes that can change in place (tags); record when a replacement is needed."""
        if rec.deleted or not rec.instance_id or rec.phase.final:
            return
        try:
            params = self.choice.launched_with(rec.spec, rec.instance)
        except InvalidPodSpec as exc:
            self.record(lock, rec, rec.phase, reason=exc.reason, message=exc.message, warning=True)
            return
        current = {t["Key"]: t["Value"] for t in rec.instance.get("Tags", [])}
        wanted = dict(params.tags)
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changed:
            self.ec2.create_tags([rec.instance_id], changed)
            rec.instance = {
                **rec.instance,
                "Tags": [{"Key": k, "Value": v} for k, v in {**current, **changed}.items()],
            }
        differs = [
            name
            for name, have, want in (
                ("image-id", rec.instance.get("ImageId"), params.image_id),
                ("instance-type", rec.instance.get("InstanceType"), params.instance_type),
            )
            if have and want and have != want  # "": the launch template's, not compared
        ]
        if differs:
            self.record(
                lock,
                rec,
                rec.phase,
                reason="ReplacementNeeded",
                warning=True,
                message=f"{', '.join(differs)} changed; delete and re-create the pod to apply it",
                instance=rec.instance,
            )
        elif changed:
            self.record(
                lock,
                rec,
                rec.phase,
                reason="Updated",
                message=f"tags updated on {rec.instance_id}: {', '.join(sorted(changed))}",
                instance=rec.instance,
            )
