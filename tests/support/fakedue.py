"""The in-memory due set of pod steps in flight (the :class:`~vkec2.ports.DueStore` port), for unit tests.

UID -> (due time, step), as ``due`` and ``due:task`` in Redis: a chain's writes make a step due or
clear it (only its own task's), the resume pass claims the overdue ones whose pod is not locked (a
test sets ``locked``) and moves them on by the back-off; ``queued_at`` stands for the publish time of
the oldest message waiting in the pods queue.
"""

from __future__ import annotations

from collections.abc import Callable

from vkec2.domain.models import DueStep


class FakeDue:
    """The due set; a test sets ``locked`` and the queue's oldest publish time (``queued_at``)."""

    def __init__(self) -> None:
        self.due: dict[str, tuple[float, DueStep]] = {}
        self.locked: set[str] = set()
        self.queued_at: float | None = None

    def schedule(self, step: DueStep, due_at: float) -> None:
        self.due[step.uid] = (due_at, step)

    def finish(self, uid: str, task: str) -> bool:
        if uid not in self.due or self.due[uid][1].task != task:
            return False
        del self.due[uid]
        return True

    def postpone(self, uid: str, task: str, due_at: float) -> bool:
        if uid not in self.due or self.due[uid][1].task != task:
            return False
        self.due[uid] = (due_at, self.due[uid][1])
        return True

    def claim_due(
        self, cutoff: float, now: float, backoff: Callable[[int], float], limit: int = 500
    ) -> list[DueStep]:
        late = sorted((at, u) for u, (at, _) in self.due.items() if at <= cutoff and u not in self.locked)
        taken = [self.due[uid][1] for _, uid in late[:limit]]
        for s in taken:
            self.due[s.uid] = (now + backoff(s.resumes), DueStep(s.uid, s.task, s.generation, s.resumes + 1))
        return taken

    def oldest_queued_at(self, queue: str) -> float | None:
        return self.queued_at
