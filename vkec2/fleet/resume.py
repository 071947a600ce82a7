"""Resuming lost pod work within seconds: publish again the create or delete step that is overdue.

A worker killed by SIGKILL takes with it the messages it held (a scheduled next step waiting for
its countdown, a message taken off the queue but not yet recorded as unacknowledged); the broker
gives them back only after ``celery.visibility_timeout_seconds``, or never. Every pod with a step in
flight is *due* that step at a time in Redis (its publish time plus its countdown, see
:mod:`vkec2.store.due`); :class:`Resume` (the body of ``vkec2.maintenance.resume``, every
``beat.resume_interval_seconds``) publishes again each step overdue by more than
``celery.resume_slack_seconds`` whose pod lock is free. Overdue counts from the oldest message still
waiting in the ``pods`` queue when that is older than now: a step published after it may still be
queued behind it, so a busy fleet does not double its own queue. Each step published again is due
again after a back-off (the slack, doubling per resume without progress, at most
:data:`BACKOFF_MAX_FACTOR` times the slack). It is sent as from outside (no ``continuation``), so
it takes over the chain and a late original exits as superseded; fencing makes a spurious resume
harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vkec2.config import Settings
from vkec2.contract import PODS_QUEUE
from vkec2.ports import DueStore

log = logging.getLogger(__name__)

#: A step published again without progress waits at most this many slacks before the next resume.
BACKOFF_MAX_FACTOR = 8

Publish = Callable[[str, str, int | None], None]


def cutoff(now: float, oldest_queued_at: float | None, slack: float) -> float:
    """Steps due before this are overdue: ``slack`` before now, or before the oldest queued message."""
    start = now if oldest_queued_at is None else min(now, oldest_queued_at)
    return start - slack


def backoff(resumes: int, slack: float) -> float:
    """How long a step just published again has before it may be published again."""
    return slack * float(min(2 ** min(resumes, 16), BACKOFF_MAX_FACTOR))


@dataclass
class ResumeReport:
    cutoff: float = 0.0
    resumed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {"cutoff": round(self.cutoff, 3), "resumed": len(self.resumed), "uids": self.resumed[:20]}


class Resume:
    """One pass: publish again every overdue pod step whose lock is free."""

    def __init__(
        self,
        settings: Settings,
        store: DueStore,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slack = settings.celery.resume_slack_seconds
        self.store, self.publish, self.clock = store, publish, clock

    def run(self) -> ResumeReport:
        now = self.clock()
        report = ResumeReport(cutoff(now, self.store.oldest_queued_at(PODS_QUEUE), self.slack))
        for step in self.store.claim_due(report.cutoff, now, lambda n: backoff(n, self.slack)):
            self.publish(step.task, step.uid, step.generation)
            report.resumed.append(step.uid)
            log.warning(
                "pod %s: %s overdue (resumed %d times before); published again",
                step.uid,
                step.task,
                step.resumes,
            )
        return report
