"""A forced simulation state, and the runtime wrapper that makes an agent report it.

The Simulation service (:mod:`agent.sim.service`) sets a :class:`Forced` state on an agent or a
virtual agent: a phase to report (RUNNING, FAILED, SUCCEEDED, PENDING, UNKNOWN), NOT_SERVING, a
delay before every answer, no answer at all, or a Spot notice to report (an interruption notice,
due two minutes later, or a rebalance recommendation), as an agent on EC2 reports IMDS's. What
the agent *reports* is changed here:
:class:`ControlledRuntime` wraps the real runtime (process or simulated) and rewrites its
snapshots with :func:`apply_forced`, keeping their version so watches behave as before. How the
agent *answers* (delays, no answer, UNAVAILABLE, health NOT_SERVING) is the fault-injecting
interceptor's part (:mod:`agent.sim.faults`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, cast

from agent.model import (
    ConditionTracker,
    PodSnapshot,
    Running,
    SpotNotice,
    State,
    Terminated,
    Waiting,
    derive_conditions,
)
from agent.runtime import Runtime, WrappedRuntime
from agent.sim.runtime import SimRuntime
from agent.v1 import simulation_pb2


@dataclass(frozen=True)
class Forced:
    """What the Simulation service forced (SetApplicationState); the default forces nothing."""

    state: int = simulation_pb2.FORCED_STATE_UNSPECIFIED
    delay_ms: int = 0
    no_answer: bool = False
    reason: str = ""
    message: str = ""
    exit_code: int = 0
    spot_notice: str = ""  # terminate | stop | hibernate (an interruption notice) | rebalance


NOTHING_FORCED = Forced()


def apply_forced(snap: PodSnapshot, forced: Forced) -> PodSnapshot:
    """What the agent reports when a state is forced: the phase and container states to match."""
    state = forced.state
    if state in (simulation_pb2.FORCED_STATE_UNSPECIFIED, simulation_pb2.FORCED_STATE_NOT_SERVING):
        return snap
    now = snap.start_time or 0.0
    phase: str
    new_state: State
    if state == simulation_pb2.FORCED_STATE_RUNNING:
        phase, new_state = "Running", Running(now)
    elif state == simulation_pb2.FORCED_STATE_FAILED:
        code = forced.exit_code or 1
        phase, new_state = "Failed", Terminated(code, "Error", now, now, message=forced.message)
    elif state == simulation_pb2.FORCED_STATE_SUCCEEDED:
        phase, new_state = "Succeeded", Terminated(0, "Completed", now, now)
    elif state == simulation_pb2.FORCED_STATE_PENDING:
        phase, new_state = "Pending", Waiting("ContainerCreating", forced.message)
    else:
        phase, new_state = "Unknown", Waiting("ContainerStatusUnknown", forced.message)
    running = isinstance(new_state, Running)
    statuses = tuple(replace(c, state=new_state, ready=running, started=running) for c in snap.statuses)
    conds = derive_conditions(ConditionTracker(), phase, snap.init_statuses, statuses, snap.start_time)
    default_reason = {"Failed": "SimulatedFailure", "Unknown": "SimulatedUnknown"}.get(phase, "")
    return replace(
        snap,
        phase=phase,
        statuses=statuses,
        conditions=conds,
        reason=forced.reason or default_reason,
        message=forced.message or snap.message,
    )


def forced_notice(kind: str) -> SpotNotice | None:
    """The Spot notice a simulation forces (``rebalance``, or an interruption's action), or None."""
    if not kind:
        return None
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
    if kind == "rebalance":
        return SpotNotice("rebalance", "", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return SpotNotice("interruption", kind, at)


class ControlledRuntime(WrappedRuntime):
    """A runtime whose reports follow the forced state; everything else goes to the wrapped runtime."""

    __slots__ = ("forced",)

    def __init__(self, inner: Runtime) -> None:
        super().__init__(inner)
        self.forced = NOTHING_FORCED

    @property
    def active(self) -> bool:
        return self.forced != NOTHING_FORCED

    def force(self, forced: Forced) -> None:
        """Report (and answer) per ``forced`` from now on; watchers are woken to see it."""
        self.forced = forced
        self.inner.notify()

    def _shown(self, snap: PodSnapshot) -> PodSnapshot:
        forced = self.forced
        if forced == NOTHING_FORCED:
            return snap
        shown = apply_forced(snap, forced)
        notice = forced_notice(forced.spot_notice)
        return shown if notice is None else replace(shown, spot_notice=notice)

    def state_pb(self) -> simulation_pb2.SimulationState:
        """The simulation state of this agent, as the Simulation service answers it."""
        f = self.forced
        inner = self.inner
        random_on, seed = inner.random_status if isinstance(inner, SimRuntime) else (False, 0)
        return simulation_pb2.SimulationState(
            state=cast(Any, f.state),
            delay_ms=f.delay_ms,
            no_answer=f.no_answer,
            reason=f.reason,
            message=f.message,
            exit_code=f.exit_code,
            random_status=random_on,
            seed=seed,
            spot_notice=f.spot_notice,
        )
