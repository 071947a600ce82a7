"""The health sweep's remediation gate: the circuit breaker's state per pass, the cap, paused pods.

:class:`RemediationGate` wraps the pure rules of :mod:`vkec2.domain.breaker` with the store, the
log and the metrics: :meth:`~RemediationGate.begin` folds a pass's check tally into the breaker kept
in Redis (logging once per transition, saying whether this worker looks cut off from the agents or
the agents look down) and returns the :class:`PassGate` the sweep consults per pod: whether the
pod's failure is paused by the open breaker, and whether the per-interval cap of agent-caused
replacements still has room. :meth:`~RemediationGate.finish` records the replacements made and
stores the breaker. :func:`failure_class` classifies an agent error; :func:`paused_conditions`
marks a paused pod's Healthy condition Unknown; :func:`fleet_signals` reads the breaker and the beat
liveness verdict for the producer, ``vkec2 status`` and the metrics.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vkec2.config import Settings
from vkec2.contract import HEALTH_SWEEP, HEALTHY
from vkec2.domain.beat import BeatLiveness, beat_liveness
from vkec2.domain.breaker import (
    BreakerPolicy,
    BreakerState,
    FailureClass,
    PassTally,
    decide,
    remediation_budget,
    remember_remediations,
)
from vkec2.domain.models import condition
from vkec2.errors import AgentError, AgentRejected, AgentUnavailable
from vkec2.observability import metrics
from vkec2.ports import FleetSignalStore, PodStore

log = logging.getLogger("vkec2.domain.health")

#: Words of a gRPC UNAVAILABLE that mean the TLS handshake failed, not the network.
TLS_WORDS = ("ssl", "tls", "handshake", "certificate")


def this_worker() -> str:
    """``host/pid`` of this process, the name the breaker records for the worker that saw it."""
    return f"{socket.gethostname()}/{os.getpid()}"


def fleet_signals(store: FleetSignalStore, liveness_seconds: float) -> tuple[BreakerState, BeatLiveness]:
    """The remediation breaker and the beat liveness verdict (``Settings.beat_liveness_seconds()``),
    as the producer, ``vkec2 status`` and the metrics show them."""
    beat = beat_liveness(store.beat_signals(), time.time(), liveness_seconds)
    return store.remediation_breaker(), beat


def failure_class(exc: AgentError) -> FailureClass:
    """Unreachable (network, deadline), identity (TLS, a refused or foreign agent), else workload."""
    if isinstance(exc, AgentUnavailable):
        text = exc.message.lower()
        return FailureClass.IDENTITY if any(w in text for w in TLS_WORDS) else FailureClass.UNREACHABLE
    if isinstance(exc, AgentRejected):
        return FailureClass.IDENTITY
    return FailureClass.WORKLOAD


def tally(failures: Iterable[FailureClass | None], at: float) -> PassTally:
    """The pass's tally of checks (one entry per check; None: it passed) by failure class."""
    items = list(failures)
    counts = Counter(f.value for f in items if f is not None)
    return PassTally(at, len(items), dict(counts))


def is_paused(conditions: Sequence[dict[str, Any]]) -> bool:
    """Whether the pod's Healthy condition is Unknown (only the open breaker writes that)."""
    return any(c.get("type") == HEALTHY and c.get("status") == "Unknown" for c in conditions)


def paused_conditions(
    conditions: Sequence[dict[str, Any]], reason: str, message: str, at: float
) -> list[dict[str, Any]]:
    """The pod's conditions with Healthy Unknown (``reason``), its transition time kept if already so."""
    healthy = condition(HEALTHY, None, reason, message, at)
    for old in conditions:
        if old.get("type") == HEALTHY and old.get("status") == "Unknown":
            healthy["lastTransitionTime"] = old.get("lastTransitionTime", healthy["lastTransitionTime"])
    return [c for c in conditions if c.get("type") != HEALTHY] + [healthy]


@dataclass
class PassGate:
    """What one pass may do: the breaker as decided for it, and the replacements it still may make."""

    breaker: BreakerState
    budget: int
    replaced_at: list[float] = field(default_factory=list)
    deferred: int = 0

    def pauses(self, failure: FailureClass | None) -> bool:
        return self.breaker.pauses(failure)

    def take(self, at: float) -> bool:
        """Spend one agent-caused replacement of the cap; False (deferred) when none is left."""
        if self.budget <= 0:
            self.deferred += 1
            return False
        self.budget -= 1
        self.replaced_at.append(at)
        return True


class RemediationGate:
    """The breaker and the cap of one cluster's health sweep, kept in the store."""

    def __init__(self, settings: Settings, store: PodStore, worker: str) -> None:
        self.store = store
        self.worker = worker
        self.policy = BreakerPolicy.from_settings(settings.health)
        self.interval = settings.health.interval_seconds

    def begin(self, checked: PassTally, running: int) -> PassGate:
        """Fold this pass's tally into the stored breaker; log and count a transition."""
        before = self.store.remediation_breaker()
        state, changed = decide(before, checked, self.policy, self.worker)
        if changed:
            self._transition(state, checked)
        budget = remediation_budget(state, self.policy, running, checked.at, self.interval)
        return PassGate(state, budget)

    def finish(self, gate: PassGate, at: float) -> BreakerState:
        """Store the breaker with this pass's replacements remembered for the cap."""
        state = remember_remediations(gate.breaker, gate.replaced_at, at, self.interval)
        self.store.put_remediation_breaker(state)
        if gate.deferred:
            log.warning(
                "%s: %d agent-caused replacements deferred: the cap of %d per %.0fs interval is reached",
                HEALTH_SWEEP,
                gate.deferred,
                len(state.remediations),
                self.interval,
            )
        return state

    def _transition(self, state: BreakerState, checked: PassTally) -> None:
        metrics.breaker_transition("open" if state.open else "closed")
        if state.open:
            log.warning(
                "remediation breaker OPEN (%s, %s, %.0f%% failed %s): %s",
                state.reason,
                "this worker is cut off" if state.scope == "worker" else "agents are down",
                100 * state.share,
                state.failure,
                state.message,
            )
        else:
            log.warning(
                "remediation breaker CLOSED: %.0f%% of %d checks failed in the window; pods that fail "
                "again are replaced after the usual thresholds",
                100 * state.share,
                sum(t.checked for t in state.window),
            )
