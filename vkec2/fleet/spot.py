"""Spot interruptions in the health sweep: naming a lost Spot instance, and marking pods that got a notice.

The sweep (:mod:`vkec2.fleet.sweep`) reads two signals for a Spot pod. EC2's: DescribeInstances
shows an interrupted Spot instance ``shutting-down``/``terminated`` (or ``stopping``/``stopped``)
with ``InstanceLifecycle: spot`` and a ``Server.Spot*`` state reason; :func:`lost_reason` turns
that into reason ``SpotInterrupted`` with AWS's reason in the message, and the sweep's ordinary
lost-instance remediation (:meth:`~vkec2.fleet.lifecycle.Lifecycle.replace`) does the rest: Failed
for restartPolicy Never, a new attempt on a new instance otherwise, the interrupted instance
terminated and its record cleaned like any lost instance's. The agent's: it reads the instance
metadata (:mod:`agent.spot`) and reports an interruption notice (the two-minute warning) or a
rebalance recommendation in its status; :class:`SpotNotices` marks the pod once per notice
(condition ``vkec2.io/SpotInterruptionNotice`` True, a Warning event with the notice) and does not
replace it early: the notice is best effort and the workload still runs until EC2 takes the
instance, which the next sweep sees as the instance's state, so a pod is never replaced for an
interruption that did not come, and one that came is replaced at most a sweep interval later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from vkec2.contract import (
    SPOT_INTERRUPTED,
    SPOT_INTERRUPTION_NOTICE,
    SPOT_NOTICE_CLEARED_REASON,
    SPOT_NOTICE_REASON,
    SPOT_REBALANCE_REASON,
)
from vkec2.domain.agents import AppStatus, SpotNotice
from vkec2.domain.models import Phase, PodRecord, StatusEvent, condition
from vkec2.domain.spot import NOTICE_REBALANCE, interruption, notice_message
from vkec2.errors import LockBusy, StaleFence, Vkec2Error
from vkec2.ports import Ec2, PodStore

log = logging.getLogger("vkec2.fleet.spot")

#: The remediation reason of a lost instance that was not a Spot interruption.
REASON_INSTANCE_LOST = "InstanceLost"


def lost_reason(instance_id: str, state: str, instance: Mapping[str, Any] | None) -> tuple[str, str]:
    """The remediation reason and message of a lost instance: ``SpotInterrupted`` when EC2 says so."""
    aws = interruption(instance)
    if aws is None:
        return REASON_INSTANCE_LOST, f"instance {instance_id} is {state}"
    return SPOT_INTERRUPTED, f"Spot instance {instance_id} was interrupted by EC2 ({aws}); it is {state}"


def lost_pods(
    ec2: Ec2, recs: Iterable[PodRecord], live: Mapping[str, Any]
) -> list[tuple[PodRecord, str, str]]:
    """Running pods whose instance is not among ``live``, each with its remediation reason and message.

    The orphan GC lists only live instances; the lost ones are described (one call) so that a
    Spot interruption is reported as such there too. When that fails they are just lost.
    """
    lost = [
        r
        for r in recs
        if r.phase is Phase.RUNNING and r.instance_id and not r.deleted and r.instance_id not in live
    ]
    if not lost:
        return []
    try:
        described = ec2.describe(rec.instance_id for rec in lost)
    except Vkec2Error as exc:
        log.warning("cannot describe lost instances: %s", exc.message)
        described = {}
    out = []
    for rec in lost:
        instance = described.get(rec.instance_id)
        state = str((instance or {}).get("State", {}).get("Name", "gone"))
        out.append((rec, *lost_reason(rec.instance_id, state, instance)))
    return out


def settle_notice(
    previous: Sequence[Mapping[str, Any]], stated: Collection[Any], instance_id: str
) -> list[dict[str, Any]]:
    """What a phase write adds for the notice condition: kept while the pod has its instance, turned
    False (reason ``InstanceReplaced``) once it left it; nothing when it is stated or was not True."""
    noticed = [c for c in previous if c.get("type") == SPOT_INTERRUPTION_NOTICE and c.get("status") == "True"]
    if not noticed or SPOT_INTERRUPTION_NOTICE in stated:
        return []
    if instance_id:
        return [dict(noticed[-1])]
    return [
        condition(SPOT_INTERRUPTION_NOTICE, False, SPOT_NOTICE_CLEARED_REASON, "the pod left that instance")
    ]


def notice_reason(notice: SpotNotice) -> str:
    """The condition and event reason of a notice."""
    return SPOT_REBALANCE_REASON if notice.kind == NOTICE_REBALANCE else SPOT_NOTICE_REASON


def marked(conditions: Sequence[Mapping[str, Any]], notice: SpotNotice) -> bool:
    """Whether the pod already carries this notice (an interruption notice covers a rebalance)."""
    reasons = {notice_reason(notice), SPOT_NOTICE_REASON}
    return any(
        c.get("type") == SPOT_INTERRUPTION_NOTICE and c.get("status") == "True" and c.get("reason") in reasons
        for c in conditions
    )


class SpotNotices:
    """Marks Running pods whose agent reports a Spot notice: one condition and one event per notice."""

    def __init__(self, store: PodStore, lock_ttl_ms: int, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.lock_ttl_ms = lock_ttl_ms
        self.clock = clock

    def mark(self, recs: Sequence[PodRecord], statuses: Mapping[str, AppStatus | None]) -> int:
        """Mark the pods of ``recs`` whose status (by UID) carries a new notice; the count of busy locks."""
        busy = 0
        for rec in recs:
            status = statuses.get(rec.uid)
            notice = status.spot_notice if status is not None else None
            if notice is None or marked(rec.conditions, notice):
                continue
            try:
                self._mark(rec, notice)
            except (LockBusy, StaleFence):
                busy += 1
        return busy

    def _mark(self, rec: PodRecord, notice: SpotNotice) -> None:
        with self.store.locked(rec.uid, self.lock_ttl_ms) as lock:
            fresh = self.store.get(rec.uid)
            if (
                fresh is None
                or fresh.phase is not Phase.RUNNING
                or fresh.instance_id != rec.instance_id
                or fresh.deleted
                or marked(fresh.conditions, notice)
            ):
                return
            reason, message = notice_reason(notice), notice_message(fresh.instance_id, notice)
            conditions = [c for c in fresh.conditions if c.get("type") != SPOT_INTERRUPTION_NOTICE]
            conditions.append(condition(SPOT_INTERRUPTION_NOTICE, True, reason, message, self.clock()))
            event = StatusEvent.of(
                fresh, fresh.phase, reason=reason, message=message, warning=True, conditions=conditions
            )
            lock.write({"conditions": conditions}, event, fresh.node)
            log.warning("pod %s/%s (%s): %s", fresh.namespace, fresh.name, fresh.uid, message)
