"""Beat liveness: whether a fleet has an active Celery beat, judged from what beat leaves in Redis.

Pure logic, no I/O: the store reads the :class:`BeatSignals` (RedBeat's lock, which the active beat
re-extends every tick and which expires ``beat.lock_timeout_seconds`` after the beat died or let
go; the newest finished run of any periodic task, ``maintenance:last:{task}``) and
:func:`beat_liveness` turns them into a :class:`BeatLiveness`. A held lock means a beat runs. Without
one, the fleet is missing its beat once the newest periodic run is older than
``Settings.beat_liveness_seconds()`` (three times the shortest period, at least 60 s, unless set),
or when no periodic task ever ran. The producer shows the verdict as the node condition
``vkec2.io/BeatMissing`` (it does not touch Ready), ``vkec2 status`` prints it, and
:mod:`vkec2.observability.metrics` exports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BeatSignals:
    """What Redis says about beat: whether RedBeat's lock is held, and the newest periodic run (0: none)."""

    lock_held: bool
    last_run: float


@dataclass(frozen=True)
class BeatLiveness:
    """The verdict: ``missing`` is True when no beat has been active for longer than allowed."""

    missing: bool
    reason: str
    message: str
    last_run: float = 0.0


def beat_liveness(signals: BeatSignals, now: float, liveness_seconds: float) -> BeatLiveness:
    """The rule: a held lock is a live beat; else the newest periodic run must be recent enough."""
    if signals.lock_held:
        return BeatLiveness(False, "BeatActive", "a beat holds the RedBeat lock", signals.last_run)
    if not signals.last_run:
        return BeatLiveness(
            True,
            "BeatMissing",
            "no beat holds the RedBeat lock and no periodic task has ever run: start `celery -A tasks beat`",
        )
    idle = now - signals.last_run
    if idle <= liveness_seconds:
        return BeatLiveness(
            False,
            "BeatActive",
            f"no beat holds the RedBeat lock, but a periodic task ran {idle:.0f}s ago",
            signals.last_run,
        )
    return BeatLiveness(
        True,
        "BeatMissing",
        f"no beat holds the RedBeat lock and no periodic task ran for {idle:.0f}s (more than "
        f"{liveness_seconds:.0f}s): health sweeps, warm pools, quotas and orphan GC have stopped",
        signals.last_run,
    )
