"""Launch slots: a launch's RunInstances tokens reserved once, so no worker thread waits for them.

A pod's own RunInstances (or a batch's, :mod:`vkec2.fleet.batchlaunch`) reserves one request token
and one instance token per instance from the fleet's buckets (:class:`vkec2.ports.LaunchTokens`)
and learns when they exist; the step comes back then with a countdown instead of sleeping. A
pod's reservation is kept in its record (``launch_slot``) under its fence, so a step that comes
back early, or runs twice, never reserves again; the RunInstances it pays for spends it, whatever
EC2 answers (a throttled call counts against the endpoint's bucket too), so the next try reserves
anew. A reservation beyond the limiter's horizon is a retryable throttle (``FleetRateLimited``)
that takes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from vkec2.domain.models import PodRecord, now
from vkec2.errors import Ec2Error
from vkec2.ports import LaunchTokens, PodLock

#: A reserved slot this close is taken as now.
SLOT_TOLERANCE_SECONDS = 0.05


def reserve(tokens: LaunchTokens, instances: int) -> float:
    """Reserve one RunInstances request and ``instances`` instance tokens: the seconds until they
    exist. Raises a retryable ``FleetRateLimited`` when that is more than the horizon away."""
    wait = tokens.reserve_launch(instances)
    if wait < 0:
        raise Ec2Error(
            "RunInstances: the fleet's launch tokens are reserved for more than an hour",
            code="FleetRateLimited",
            retryable=True,
            reason="EC2Throttled",
        )
    return wait


def pod_slot(tokens: LaunchTokens | None, lock: PodLock, rec: PodRecord) -> float:
    """Seconds until this attempt's own RunInstances tokens exist (0: now; reserved on the first
    ask and recorded in ``launch_slot``). No limiter: always now."""
    if tokens is None:
        return 0.0
    if not rec.launch_slot:
        rec.launch_slot = now() + reserve(tokens, 1)
        lock.write({"launch_slot": rec.launch_slot})
    left = rec.launch_slot - now()
    return left if left > SLOT_TOLERANCE_SECONDS else 0.0


def launch_intent(lock: PodLock, rec: PodRecord) -> Callable[[str], None]:
    """The intent of a pod's own launch (``intent`` of :meth:`vkec2.fleet.capacity.CapacityLaunch.launch`):
    ``intent(token)`` before RunInstances records the token a step that stops after it re-sends, and
    spends the reserved slot; ``intent("")`` after a refusal: nothing was launched under it."""

    def intent(token: str) -> None:
        fields: dict[str, object] = {}
        if rec.launch_token != token:
            fields["launch_token"] = rec.launch_token = token
        if token and rec.launch_slot:
            fields["launch_slot"] = rec.launch_slot = 0.0
        if fields:
            lock.write(fields)
        if token:
            lock.guard()

    return intent
