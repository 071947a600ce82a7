"""Per-pod health accounting for the health sweep: thresholds, Unknown counting, flapping with damping.

Pure logic, no I/O: :func:`observe` folds one check result (:class:`Outcome` OK, FAILED or UNKNOWN)
into a pod's :class:`HealthState` (kept in the pod record's ``health`` field) and returns the
:class:`Change` events the sweep must report. Consecutive failures since the last OK make the pod
Unhealthy at ``unhealthy_threshold``; Unknown results are counted on their own against
``unknown_threshold`` (neither kind resets the other, only an OK does), so a pod can never stay
Unknown, or alternate Unknown and failed, forever. Every flip between OK and FAILED is a transition;
``flapping_count`` transitions within ``flapping_window_seconds`` mark the pod Flapping. Flapping is
damped with hysteresis: it is reported once when it starts and once when the transitions in the
window fall to at most ``(flapping_count - 1) // 2``, and while it lasts the sweep reports no
per-check changes. After a failure the next check of that pod backs off (the agent reconnect
back-off) so a dead agent is not hammered. :func:`with_conditions` turns a state into the pod's
Healthy and Flapping conditions, and :func:`health_label` into what ``vkec2 pods`` shows.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from vkec2.config import Backoff, HealthSettings
from vkec2.contract import FLAPPING, HEALTHY
from vkec2.domain.models import condition


class Outcome(StrEnum):
    """The result of one health check of a pod."""

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Change(StrEnum):
    """What one observation changed, as an Event reason."""

    UNHEALTHY = "Unhealthy"
    RECOVERED = "Recovered"
    FLAPPING = "Flapping"
    STOPPED_FLAPPING = "StoppedFlapping"


@dataclass(frozen=True)
class HealthPolicy:
    unhealthy_threshold: int
    unknown_threshold: int
    flapping_window_seconds: float
    flapping_count: int

    @classmethod
    def from_settings(cls, health: HealthSettings) -> HealthPolicy:
        return cls(
            health.unhealthy_threshold,
            health.unknown_threshold,
            health.flapping_window_seconds,
            health.flapping_count,
        )

    @property
    def stop_flapping_at(self) -> int:
        """Transitions in the window at or below which a flapping pod is calm again."""
        return (self.flapping_count - 1) // 2

    @property
    def kept_transitions(self) -> int:
        return 2 * self.flapping_count


@dataclass(frozen=True)
class HealthState:
    """What the sweep remembers about one pod between checks."""

    failures: int = 0
    unknowns: int = 0
    last_ok: bool | None = None
    transitions: tuple[float, ...] = ()
    flapping: bool = False
    unhealthy: bool = False
    checks: int = 0
    last_checked: float = 0.0
    last_result: str = ""
    detail: str = ""
    next_check: float = 0.0
    remediations: int = field(default=0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transitions"] = list(self.transitions)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> HealthState:
        if not raw:
            return cls()
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known["transitions"] = tuple(float(t) for t in known.get("transitions", ()))
        return cls(**known)


def observe(
    state: HealthState, outcome: Outcome, at: float, policy: HealthPolicy, detail: str = ""
) -> tuple[HealthState, list[Change]]:
    """Fold one check result taken at time ``at`` into ``state``."""
    changes: list[Change] = []
    transitions = [t for t in state.transitions if t > at - policy.flapping_window_seconds]
    failures, unknowns, last_ok = state.failures, state.unknowns, state.last_ok
    unhealthy, flapping = state.unhealthy, state.flapping
    if outcome is Outcome.OK:
        if last_ok is False:
            transitions.append(at)
        failures, unknowns, last_ok = 0, 0, True
        if unhealthy:
            unhealthy = False
            changes.append(Change.RECOVERED)
    elif outcome is Outcome.FAILED:
        if last_ok is True:
            transitions.append(at)
        failures += 1
        last_ok = False
    else:
        unknowns += 1
    transitions = transitions[-policy.kept_transitions :]
    if not unhealthy and (failures >= policy.unhealthy_threshold or unknowns >= policy.unknown_threshold):
        unhealthy = True
        changes.append(Change.UNHEALTHY)
    if not flapping and len(transitions) >= policy.flapping_count:
        flapping = True
        changes.append(Change.FLAPPING)
    elif flapping and len(transitions) <= policy.stop_flapping_at:
        flapping = False
        changes.append(Change.STOPPED_FLAPPING)
    if flapping and Change.RECOVERED in changes:
        changes.remove(Change.RECOVERED)  # damped: no per-check reports while flapping
    new = replace(
        state,
        failures=failures,
        unknowns=unknowns,
        last_ok=last_ok,
        transitions=tuple(transitions),
        flapping=flapping,
        unhealthy=unhealthy,
        checks=state.checks + 1,
        last_checked=at,
        last_result=outcome.value,
        detail=detail,
    )
    return new, changes


def next_check_delay(failures: int, backoff: Backoff, rng: random.Random | None = None) -> float:
    """How long to leave an agent alone after ``failures`` consecutive failed checks (0: none)."""
    if failures <= 0:
        return 0.0
    delay = min(backoff.max_delay_seconds, backoff.base_delay_seconds * backoff.multiplier ** (failures - 1))
    jitter = (rng or random).uniform(-backoff.jitter, backoff.jitter)
    return max(0.0, delay * (1 + jitter))


def with_conditions(conditions: list[dict[str, Any]], state: HealthState, at: float) -> list[dict[str, Any]]:
    """The pod's conditions with the fleet's Healthy and Flapping conditions set from ``state``."""
    out = [c for c in conditions if c.get("type") not in (HEALTHY, FLAPPING)]
    previous = {c.get("type"): c for c in conditions}
    healthy = condition(
        HEALTHY,
        not state.unhealthy,
        "Unhealthy" if state.unhealthy else "Healthy",
        state.detail if state.unhealthy else "",
        at,
    )
    old = previous.get(HEALTHY)
    if old is not None and old.get("status") == healthy["status"]:
        healthy["lastTransitionTime"] = old.get("lastTransitionTime", healthy["lastTransitionTime"])
    out.append(healthy)
    if state.flapping or FLAPPING in previous:
        flapping = condition(
            FLAPPING,
            state.flapping,
            "Flapping" if state.flapping else "Stable",
            f"{len(state.transitions)} health transitions within the window" if state.flapping else "",
            at,
        )
        old = previous.get(FLAPPING)
        if old is not None and old.get("status") == flapping["status"]:
            flapping["lastTransitionTime"] = old.get("lastTransitionTime", flapping["lastTransitionTime"])
        out.append(flapping)
    return out


def health_label(raw: dict[str, Any] | None, running: bool) -> str:
    """What ``vkec2 pods`` shows for a pod's health record: Flapping, Unhealthy, Unknown (the last
    check could not tell), Healthy, Checking (running, not checked yet), or "-" (not running)."""
    if not running:
        return "-"
    state = HealthState.from_dict(raw)
    if state.flapping:
        return "Flapping"
    if state.unhealthy:
        return "Unhealthy"
    if state.checks == 0:
        return "Checking"
    if state.last_result == Outcome.UNKNOWN.value:
        return "Unknown"
    if state.last_result == Outcome.FAILED.value:
        return "Failing"
    return "Healthy"
