"""Row C27: the first create step of a record the producer re-created after Redis lost its data.

A record rebuilt from the pod list (flagged ``rebuilt``, see :mod:`vkec2.store.epoch`) starts at
Pending, attempt 0, with no launch intent: everything the lost record knew is gone, but EC2 still
knows what the pod launched. Before anything else the step looks up every instance tagged with the
pod's UID in any state, terminated and shutting-down ones too, and takes the highest attempt in
their ClientTokens (``vkec2-{uid}-{attempt}[-{hash}]``): the record goes on at that + 1 (0 when the
pod never launched anything), so no token is ever sent twice (AWS answers a reused token with the
old, maybe terminated, instance). The oldest live instance is adopted and the others terminated,
as in row C2. When it is running and its agent already reports this pod's workload, the agent's
phase is recorded at once, with the instance, the endpoint and the statuses, so a Running pod does
not flap to Pending in Kubernetes; otherwise the normal adopt path carries on (the agent's
LaunchApplication is idempotent for the same pod UID). The flag is cleared in the same write as the
attempt, so the lookup runs once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vkec2.config import Settings
from vkec2.domain import phases
from vkec2.domain.agents import AgentTarget, resolve_endpoint
from vkec2.domain.instances import LIVE_STATES, Instance, highest_attempt
from vkec2.domain.models import Phase, PodRecord, now
from vkec2.errors import AgentError
from vkec2.fleet.teardown import Recorder
from vkec2.fleet.visibility import PodInstances
from vkec2.ports import Agents, Ec2, PodLock

log = logging.getLogger("vkec2.fleet.lifecycle")


@dataclass(frozen=True)
class Rebuilt:
    """What the rebuild step found: the instance to adopt (None: launch as usual), or the pod settled."""

    instance: Instance | None = None
    settled: bool = False


class Rebuild:
    """The rebuild step of one fleet (see the module docstring)."""

    def __init__(
        self, settings: Settings, ec2: Ec2, agents: Agents, instances: PodInstances, record: Recorder
    ) -> None:
        self.settings = settings
        self.ec2 = ec2
        self.agents = agents
        self.instances = instances
        self.record = record

    def step(self, lock: PodLock, rec: PodRecord) -> Rebuilt:
        history = self.ec2.pod_instance_history(rec.uid)
        highest = highest_attempt(rec.uid, history)
        attempt = max(rec.attempt, 0 if highest is None else highest + 1)
        lock.write({"attempt": attempt, "rebuilt": False})
        rec.attempt, rec.rebuilt = attempt, False
        live = sorted(
            (i for i in history if i.get("State", {}).get("Name") in LIVE_STATES),
            key=lambda i: str(i.get("LaunchTime", "")),
        )
        if history:
            log.warning(
                "pod %s/%s (%s) rebuilt after Redis lost its data: %d instance(s) found, %d live; attempt %d",
                rec.namespace,
                rec.name,
                rec.uid,
                len(history),
                len(live),
                attempt,
            )
        else:  # a fresh Redis looks the same as a lost one until EC2 is asked: nothing was lost
            log.info(
                "pod %s/%s (%s): no instance in EC2 for its new record; a first launch",
                rec.namespace,
                rec.name,
                rec.uid,
            )
        if not live:
            return Rebuilt()
        keep, extra = live[0], live[1:]
        self.instances.terminate(lock, rec, [i["InstanceId"] for i in extra])  # never two: keep the oldest
        return Rebuilt(keep, settled=self._settle(lock, rec, keep))

    def _settle(self, lock: PodLock, rec: PodRecord, instance: Instance) -> bool:
        """Record the agent's phase when the running instance's agent already runs this pod."""
        if instance.get("State", {}).get("Name") != "running":
            return False
        try:
            endpoint = resolve_endpoint(self.settings.agent, instance)
            status = self.agents.status(AgentTarget(endpoint=endpoint, instance_id=instance["InstanceId"]))
        except AgentError:  # no endpoint, not serving yet, no workload: the normal adopt path
            return False
        phase = phases.from_agent(status.phase)
        if phase is None:
            return False
        self.record(
            lock,
            rec,
            phase,
            reason=status.reason or ("Started" if phase is Phase.RUNNING else ""),
            message=status.message or f"instance {instance['InstanceId']} runs the pod (record rebuilt)",
            warning=phase is Phase.FAILED,
            status=status,
            instance=instance,
            instance_id=instance["InstanceId"],
            endpoint=endpoint,
            launched_at=now(),
        )
        return True
