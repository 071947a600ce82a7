"""Random but self-consistent pod statuses from a seeded generator, for fuzzing the fleet reproducibly.

:func:`random_pod_status` draws a phase, then container states a kubelet could report with it, from
a :class:`random.Random`: the same seed gives the same sequence. The simulated runtime reports
these instead of its timeline when random statuses are switched on (``--sim-seed`` or the
Simulation service's SetRandomStatus).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import replace

from agent.model import (
    ConditionTracker,
    ContainerSnapshot,
    PodSnapshot,
    Running,
    State,
    Terminated,
    Waiting,
    derive_conditions,
    terminated_reason,
)

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def random_pod_status(
    rng: random.Random,
    containers: Sequence[str] = ("main",),
    init_containers: Sequence[str] = (),
    now: float | None = None,
) -> PodSnapshot:
    """A random but self-consistent pod status: the same ``rng`` state gives the same status.

    The phase is drawn first, then container states that a kubelet could report with it (a
    Succeeded pod has only containers that exited 0, a Running pod has at least one running ...).
    """
    now = time.time() if now is None else now
    phase = rng.choice(PHASES)
    started = now - rng.uniform(1, 3600)

    def term(ok: bool) -> Terminated:
        code = 0 if ok else rng.choice((1, 2, 137, 143))
        return Terminated(
            code,
            terminated_reason(code),
            now - rng.uniform(0, 60),
            started,
            signal=code - 128 if code > 128 else 0,
        )

    inits = [ContainerSnapshot(n, "sim", term(True), ready=True) for n in init_containers]
    if phase == "Pending" and inits:
        inits[-1] = replace(inits[-1], state=Running(started), ready=False, started=True)
    apps: list[ContainerSnapshot] = []
    for i, name in enumerate(containers):
        restarts = rng.randint(0, 5)
        last: State | None = term(rng.random() < 0.5) if restarts else None
        st: State
        if phase == "Pending":
            st = Waiting("PodInitializing" if inits else "ContainerCreating")
            restarts, last = 0, None
        elif phase == "Running":
            if i == 0 or rng.random() < 0.6:
                st = Running(started)
            else:
                last = last or term(False)
                restarts = max(restarts, 1)
                st = Waiting("CrashLoopBackOff", f"back-off 10s restarting failed container={name}")
        elif phase == "Succeeded":
            st = term(True)
        elif phase == "Failed":
            st = term(i != 0 and rng.random() < 0.5)
        else:
            st = Waiting("ContainerStatusUnknown", "the agent lost track of this container")
        apps.append(
            ContainerSnapshot(
                name,
                "sim",
                st,
                last,
                restarts,
                ready=isinstance(st, Running),
                started=isinstance(st, Running),
                container_id=f"sim://{name}",
            )
        )
    reason = message = ""
    if phase == "Unknown":
        reason, message = "NodeLost", "simulated: the pod's state could not be obtained"
    conds = derive_conditions(ConditionTracker(), phase, inits, apps, started)
    return PodSnapshot(phase, conds, tuple(inits), tuple(apps), reason, message, "", started, "", 0)
