"""The health sweep's remediation circuit breaker: when failing agents are the fleet's fault, not theirs.

Pure logic, no I/O. A failed agent check has a :class:`FailureClass`: ``unreachable`` (UNAVAILABLE,
DEADLINE_EXCEEDED, no answer within the sweep's deadline), ``identity`` (TLS or identity: the
agent refused who we are, or another instance's agent answered) or ``workload`` (the agent answered
and reported its workload or itself unhealthy). Each pass is tallied (:class:`PassTally`: checks,
failures per class); :func:`decide` pools the last ``breaker_window_passes`` tallies and opens the
breaker when more than ``breaker_share`` of those checks failed in one class (with at least
``breaker_min_checks`` checks, and at least :data:`MIN_PATTERN_FAILURES` failures of that class in
this pass unless the worker is cut off, so a single dead agent of a small fleet is still replaced;
a pass of fewer checks than that leaves an open breaker as it was).
While it is open, a pod whose
check failed in that class is not replaced for its agent alone: it is marked Unknown and its
counters start again from zero, so it must fail again after the breaker closed. The breaker closes
when the pooled share falls back to the threshold or below. The state also says whether the
sweeping worker itself looks cut off (``scope`` ``worker``: at least :data:`WORKER_SHARE` of this
pass's checks unreachable) or a set of agents is down (``agents``), and :func:`remediation_cap`
bounds agent-caused replacements per interval. Instances EC2 reports gone, stopped or impaired
are never held back by any of this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from vkec2.config import HealthSettings

#: Share of one pass's checks that must fail unreachable for the sweep to blame its own worker.
WORKER_SHARE = 0.8
#: Failures of one class in one pass below which there is no pattern: one failing agent is that
#: agent's problem (and its pod is replaced), however small the fleet, unless the worker is cut off.
MIN_PATTERN_FAILURES = 2
#: Default cap of agent-caused replacements per interval, as a share of the Running pods.
DEFAULT_CAP_SHARE = 0.1


class FailureClass(StrEnum):
    """Why an agent check failed, as far as the breaker is concerned."""

    UNREACHABLE = "unreachable"
    IDENTITY = "identity"
    WORKLOAD = "workload"


#: The node condition's reason per (scope, class) while the breaker is open.
REASONS: Mapping[tuple[str, FailureClass], str] = {
    ("worker", FailureClass.UNREACHABLE): "WorkerCannotReachAgents",
    ("agents", FailureClass.UNREACHABLE): "AgentsUnreachable",
    ("worker", FailureClass.IDENTITY): "AgentIdentityFailures",
    ("agents", FailureClass.IDENTITY): "AgentIdentityFailures",
    ("worker", FailureClass.WORKLOAD): "WorkloadsFailing",
    ("agents", FailureClass.WORKLOAD): "WorkloadsFailing",
}


@dataclass(frozen=True)
class PassTally:
    """One sweep pass: when, how many agents were checked, and the failures of each class."""

    at: float
    checked: int
    failures: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "checked": self.checked, "failures": dict(self.failures)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PassTally:
        failures = {str(k): int(v) for k, v in dict(raw.get("failures") or {}).items()}
        return cls(float(raw.get("at", 0.0)), int(raw.get("checked", 0)), failures)


@dataclass(frozen=True)
class BreakerPolicy:
    share: float
    window_passes: int
    min_checks: int
    max_remediations: int | None

    @classmethod
    def from_settings(cls, health: HealthSettings) -> BreakerPolicy:
        return cls(
            health.breaker_share,
            health.breaker_window_passes,
            health.breaker_min_checks,
            health.max_remediations_per_interval,
        )


@dataclass(frozen=True)
class BreakerState:
    """The breaker as the store keeps it: open or closed, why, since when, seen by which worker."""

    open: bool = False
    failure: str = ""  # the FailureClass that opened it
    scope: str = ""  # "worker" (the sweeping worker is cut off) or "agents" (many agents fail)
    share: float = 0.0
    since: float = 0.0
    worker: str = ""
    message: str = ""
    window: tuple[PassTally, ...] = ()
    remediations: tuple[float, ...] = ()  # times of recent agent-caused replacements

    @property
    def reason(self) -> str:
        if not self.open:
            return "RemediationActive"
        return REASONS.get((self.scope, FailureClass(self.failure)), "AgentsUnreachable")

    def pauses(self, failure: FailureClass | None) -> bool:
        """Whether a pod whose check failed with ``failure`` is held back from replacement."""
        return self.open and failure is not None and failure.value == self.failure

    def to_dict(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "failure": self.failure,
            "scope": self.scope,
            "share": self.share,
            "since": self.since,
            "worker": self.worker,
            "message": self.message,
            "window": [t.to_dict() for t in self.window],
            "remediations": list(self.remediations),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> BreakerState:
        if not raw:
            return cls()
        return cls(
            open=bool(raw.get("open", False)),
            failure=str(raw.get("failure", "")),
            scope=str(raw.get("scope", "")),
            share=float(raw.get("share", 0.0)),
            since=float(raw.get("since", 0.0)),
            worker=str(raw.get("worker", "")),
            message=str(raw.get("message", "")),
            window=tuple(PassTally.from_dict(t) for t in raw.get("window") or ()),
            remediations=tuple(float(t) for t in raw.get("remediations") or ()),
        )


def _worst(window: Sequence[PassTally]) -> tuple[FailureClass | None, float, int]:
    """The failure class with the largest pooled share of the window's checks, that share, the checks."""
    checked = sum(t.checked for t in window)
    if not checked:
        return None, 0.0, 0
    best: tuple[FailureClass | None, float] = (None, 0.0)
    for kind in FailureClass:
        share = sum(t.failures.get(kind.value, 0) for t in window) / checked
        if share > best[1]:
            best = (kind, share)
    return best[0], best[1], checked


def decide(
    state: BreakerState, tally: PassTally, policy: BreakerPolicy, worker: str
) -> tuple[BreakerState, bool]:
    """Fold this pass's ``tally`` into ``state``; returns the new state and whether it opened or closed."""
    window = (*state.window, tally)[-policy.window_passes :]
    kind, share, checked = _worst(window)
    if state.open and tally.checked < MIN_PATTERN_FAILURES:
        # One check shows no pattern either way: an open breaker stays as it was (a busy sweep that
        # checks one due pod per pass must not close it and replace the pods one by one).
        return replace(state, share=share, window=window), False
    this_pass = tally.failures.get(FailureClass.UNREACHABLE.value, 0)
    cut_off = (
        kind is FailureClass.UNREACHABLE and tally.checked > 1 and this_pass >= WORKER_SHARE * tally.checked
    )
    pattern = kind is not None and (cut_off or tally.failures.get(kind.value, 0) >= MIN_PATTERN_FAILURES)
    trips = kind is not None and checked >= policy.min_checks and share > policy.share and pattern
    if not trips or kind is None:
        closed = replace(state, open=False, share=share, window=window, message="")
        if state.open:
            closed = replace(closed, since=tally.at, worker=worker, failure="", scope="")
        return closed, state.open
    scope = "worker" if cut_off else "agents"
    failed = sum(t.failures.get(kind.value, 0) for t in window)
    if scope == "worker":
        message = (
            f"worker {worker} cannot reach the agents: {this_pass} of {tally.checked} checks of this pass "
            "failed unreachable while EC2 reports the instances running; replacements for agent failures "
            "are paused"
        )
    else:
        message = (
            f"{failed} of {checked} agent checks in the last {len(window)} passes failed {kind.value} "
            f"(more than {policy.share:.0%}); these agents look down, not their instances: replacements "
            "for agent failures are paused"
        )
    opened = not state.open or state.failure != kind.value
    new = BreakerState(
        open=True,
        failure=kind.value,
        scope=scope,
        share=share,
        since=tally.at if opened else state.since,
        worker=worker,
        message=message,
        window=window,
        remediations=state.remediations,
    )
    return new, opened


def remediation_cap(policy: BreakerPolicy, running: int) -> int:
    """Agent-caused replacements allowed per interval: the setting, else 10 % of ``running``, at least 1."""
    if policy.max_remediations is not None:
        return policy.max_remediations
    return max(1, math.ceil(DEFAULT_CAP_SHARE * running))


def remediation_budget(
    state: BreakerState, policy: BreakerPolicy, running: int, at: float, interval: float
) -> int:
    """How many agent-caused replacements this pass may still make (those of the last interval count)."""
    recent = [t for t in state.remediations if t > at - interval]
    return max(0, remediation_cap(policy, running) - len(recent))


def remember_remediations(
    state: BreakerState, times: Sequence[float], at: float, interval: float
) -> BreakerState:
    """``state`` with this pass's agent-caused replacements added and those older than an interval dropped."""
    kept = tuple(t for t in (*state.remediations, *times) if t > at - interval)
    return replace(state, remediations=kept)
