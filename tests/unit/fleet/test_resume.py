"""The resume pass (vkec2/fleet/resume.py) on the fake due set: what is overdue, the back-off, the queue."""

from __future__ import annotations

import itertools

from tests.support.fakedue import FakeDue
from vkec2.config import Settings
from vkec2.contract import POD_CREATE, POD_DELETE
from vkec2.domain.models import DueStep
from vkec2.fleet.resume import BACKOFF_MAX_FACTOR, Resume, backoff, cutoff

NOW = 10_000.0
SLACK = 10.0


def resume(due: FakeDue, clock: list[float]) -> tuple[Resume, list[tuple[str, str, int | None]]]:
    sent: list[tuple[str, str, int | None]] = []
    settings = Settings.model_validate({"celery": {"resume_slack_seconds": SLACK}})
    return Resume(settings, due, lambda t, u, g: sent.append((t, u, g)), clock=lambda: clock[0]), sent


def test_a_step_overdue_past_the_slack_is_published_again_with_its_task_and_generation() -> None:
    due = FakeDue()
    due.due["late"] = (NOW - SLACK - 1, DueStep("late", POD_DELETE, 7))
    due.due["on-time"] = (NOW - SLACK + 1, DueStep("on-time", POD_CREATE, 2))
    due.due["future"] = (NOW + 5, DueStep("future", POD_CREATE, 1))
    pass_, sent = resume(due, [NOW])
    report = pass_.run()
    assert sent == [(POD_DELETE, "late", 7)]
    assert report.resumed == ["late"] and report.cutoff == NOW - SLACK


def test_a_locked_pod_is_left_to_its_holder() -> None:
    due = FakeDue()
    due.due["busy"] = (NOW - 100, DueStep("busy", POD_CREATE))
    due.locked.add("busy")
    pass_, sent = resume(due, [NOW])
    pass_.run()
    assert sent == []
    due.locked.clear()
    pass_.run()
    assert sent == [(POD_CREATE, "busy", None)]


def test_a_resumed_step_backs_off_instead_of_being_published_every_pass() -> None:
    due = FakeDue()
    due.due["lost"] = (NOW - 100, DueStep("lost", POD_CREATE, 3))
    clock = [NOW]
    pass_, sent = resume(due, clock)
    times = []
    for _ in range(60):  # five minutes of passes every 5 s, the step never making progress
        if pass_.run().resumed:
            times.append(clock[0])
        clock[0] += 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Due again after the back-off (the slack, doubling), overdue a slack after that.
    assert gaps[:4] == [20.0, 30.0, 50.0, 90.0]
    assert max(gaps) == SLACK * BACKOFF_MAX_FACTOR + SLACK
    assert due.due["lost"][1].resumes == len(times)
    assert all(s == (POD_CREATE, "lost", 3) for s in sent)


def test_a_busy_queue_moves_the_cutoff_back_to_its_oldest_message() -> None:
    # A step published after the oldest queued message may still wait behind it: not lost.
    due = FakeDue()
    due.due["queued"] = (NOW - 30, DueStep("queued", POD_CREATE))
    due.queued_at = NOW - 25
    pass_, sent = resume(due, [NOW])
    assert pass_.run().cutoff == NOW - 25 - SLACK
    assert sent == []
    due.queued_at = NOW - 1  # the queue drained past it: the step was taken and lost
    pass_.run()
    assert sent == [(POD_CREATE, "queued", None)]


def test_the_rules_cutoff_and_backoff() -> None:
    assert cutoff(NOW, None, SLACK) == NOW - SLACK
    assert cutoff(NOW, NOW + 3, SLACK) == NOW - SLACK  # a clock ahead of ours changes nothing
    assert [backoff(n, SLACK) for n in range(6)] == [10, 20, 40, 80, 80, 80]
