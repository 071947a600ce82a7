"""The pod tags of batched launches: written right after the pod adopts its instance, never waited for.

A batch's instances are tagged at launch with what they share (cluster, node, batch); the tags that
name the pod (``vkec2.io/pod-uid``, its namespace and name, ``Name``) need one CreateTags per
instance, and CreateTags draws from EC2's mutating-request bucket (50, refilled 5 per second), so
1,000 of them take minutes. No pod waits for them: when a member adopts its instance the tags are
remembered in Redis (``launch:untagged``, which the orphan GC counts as owned), and written when
EC2 shows the instance (its pod's Booting and Launching steps) if a mutating token is free, else by
``vkec2.maintenance.pod_tags`` (:meth:`PodTags.run`, every
``beat.pod_tags_interval_seconds``), which writes as many as the tokens free now allow and never
sleeps. An instance EC2 no longer knows (terminated long ago) is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from vkec2.domain.instances import Instance
from vkec2.errors import Ec2Error
from vkec2.ports import Ec2, LaunchTokens
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)

#: The most pending tags one pass looks at.
PASS_LIMIT = 1000
NOT_FOUND = "InvalidInstanceID.NotFound"
#: An instance EC2 still does not know this long after its tags were wanted is gone: forgotten.
FORGET_AFTER_SECONDS = 600.0
WRITTEN, FORGOTTEN, NO_TOKEN, LATER = "written", "forgotten", "no token", "later"


@dataclass
class TagReport:
    written: int = 0
    pending: int = 0
    forgotten: int = 0

    def summary(self) -> dict[str, int]:
        return {"written": self.written, "pending": self.pending, "forgotten": self.forgotten}


class PodTags:
    """Writes the pod tags of batch-launched instances as the mutating budget allows."""

    def __init__(self, store: Store, ec2: Ec2, tokens: LaunchTokens) -> None:
        self.store = store
        self.ec2 = ec2
        self.tokens = tokens

    def want(self, instance: Instance, uid: str, tags: Mapping[str, str]) -> None:
        """Remember the pod tags of ``instance`` (before the pod records it), and try them now if it
        is running: EC2 does not know a just-launched instance yet (eventual consistency), so a
        pending one is tagged by its pod's later steps (:meth:`retry`) or the periodic pass."""
        instance_id = instance["InstanceId"]
        self.store.want_pod_tags({instance_id: (uid, tags)}, time.time())
        if instance.get("State", {}).get("Name") == "running":
            self._write(instance_id, tags, time.time())

    def retry(self, instance_id: str) -> None:
        """Try the pod tags of ``instance_id`` again if they are still to be written (a later step
        of its pod; never waits)."""
        entry = self.store.pending_pod_tag(instance_id)
        if entry is not None:
            self._write(instance_id, entry.tags, entry.since)

    def run(self) -> TagReport:
        """Write the pending pod tags the free mutating tokens allow; the rest wait for the next pass."""
        report = TagReport()
        pending = self.store.pending_pod_tags(PASS_LIMIT)
        for instance_id, entry in pending.items():
            outcome = self._write(instance_id, entry.tags, entry.since)
            if outcome == WRITTEN:
                report.written += 1
            elif outcome == FORGOTTEN:
                report.forgotten += 1
            elif outcome == NO_TOKEN:
                break
        report.pending = len(pending) - report.written - report.forgotten
        return report

    def _write(self, instance_id: str, tags: Mapping[str, str], since: float) -> str:
        if not self.tokens.try_take("CreateTags"):
            return NO_TOKEN
        try:
            with self.tokens.prepaid("CreateTags"):
                self.ec2.create_tags([instance_id], tags)
        except Ec2Error as exc:
            if exc.code == NOT_FOUND and time.time() - since > FORGET_AFTER_SECONDS:
                self.store.pod_tags_written([instance_id])  # gone long ago: nothing to tag
                return FORGOTTEN
            log.info("pod tags of %s not written yet: %s", instance_id, exc.message)
            return LATER  # not visible yet, throttled, unreachable: the next pass tries again
        self.store.pod_tags_written([instance_id])
        return WRITTEN
