"""Fleet-wide EC2 rate limits: token buckets in Redis, one per API class, shared by every worker.

EC2 meters each account's API calls in buckets by class; a fleet of workers that each back off on
their own still overruns them together. Here every EC2 request, first attempt and botocore retry
alike, takes a token from the bucket of its class (``run_instances``, other ``mutating`` calls,
``describe`` calls) in one Lua script on Redis's own clock (``Store.take_tokens``), so all workers
draw from the same budget, configured below AWS's defaults (``rate_limits`` in the configuration). A
token is *reserved*: a caller that finds the bucket empty is told how long until its token exists
and sleeps that long, so waiters are served in order and the rate never exceeds the bucket. A wait
beyond ``max_wait_seconds`` fails the call as throttled (:class:`~vkec2.errors.Ec2Error`,
retryable), and the task retries later with jitter; a RunInstances retried that way carries the same
ClientToken because the pod's attempt number has not changed. The gateway's botocore hooks
(:mod:`vkec2.ec2.accounting`) call :meth:`RateLimiter.acquire` before every attempt and count the
answers of RequestLimitExceeded per action in Redis for the status log.

Launches never wait in a worker thread: a create step *reserves* its RunInstances tokens (one
request, and one per instance from the ``instances`` bucket, AWS's resource bucket) with
:meth:`RateLimiter.reserve_launch`, which answers how long until they exist; the step records that
slot and comes back then with a countdown, and sends its RunInstances inside :func:`prepaid`, so
the hook does not take a token twice. Tokens nobody waits for in a thread are taken with
:meth:`RateLimiter.try_take`, which never sleeps.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from vkec2.config import RateLimitSettings, TokenBucket
from vkec2.errors import Ec2Error
from vkec2.store.redis_store import Store

RUN_INSTANCES = "run_instances"
MUTATING = "mutating"
DESCRIBE = "describe"
INSTANCES = "instances"
API_CLASSES = (RUN_INSTANCES, MUTATING, DESCRIBE)
#: The furthest ahead a launch reserves its tokens (a slot further off is refused: -1).
LAUNCH_HORIZON_SECONDS = 3600.0

_PREPAID: contextvars.ContextVar[str] = contextvars.ContextVar("vkec2_prepaid", default="")


@contextmanager
def prepaid(action: str) -> Iterator[None]:
    """The next ``action`` call's token was taken already (:meth:`RateLimiter.reserve_launch`,
    :meth:`RateLimiter.try_take`): the limiter takes none for it."""
    token = _PREPAID.set(action)
    try:
        yield
    finally:
        _PREPAID.reset(token)


def api_class(action: str) -> str:
    """The rate-limit class of an EC2 API action."""
    if action == "RunInstances":
        return RUN_INSTANCES
    if action.startswith(("Describe", "Get", "List")):
        return DESCRIBE
    return MUTATING


class RateLimiter:
    """The gateway's ``limiter`` is :meth:`acquire`: it blocks until the action's class has a token."""

    def __init__(
        self, store: Store, settings: RateLimitSettings, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.store = store
        self.settings = settings
        self._sleep = sleep

    def bucket(self, cls: str) -> TokenBucket:
        bucket: TokenBucket = getattr(self.settings, cls)
        return bucket

    def wait_time(self, action: str) -> float:
        """Reserve a token for ``action``; seconds until it may be sent, or -1 when too far off."""
        cls = api_class(action)
        bucket = self.bucket(cls)
        return self.store.take_tokens(
            cls, rate=bucket.rate, burst=bucket.burst, max_wait=self.settings.max_wait_seconds
        )

    def reserve_launch(self, instances: int) -> float:
        """Reserve one RunInstances request and ``instances`` instance tokens: seconds until both
        exist (0: now), or -1 when that is beyond :data:`LAUNCH_HORIZON_SECONDS` (nothing taken
        from that bucket)."""
        if not self.settings.enabled:
            return 0.0
        waits = []
        for cls, n in ((RUN_INSTANCES, 1), (INSTANCES, instances)):
            bucket = self.bucket(cls)
            wait = self.store.take_tokens(
                cls, n, rate=bucket.rate, burst=bucket.burst, max_wait=LAUNCH_HORIZON_SECONDS
            )
            if wait < 0:
                return -1.0
            waits.append(wait)
        return max(waits)

    def prepaid(self, action: str) -> AbstractContextManager[None]:
        """:func:`prepaid`, for callers that hold the limiter (:class:`vkec2.ports.LaunchTokens`)."""
        return prepaid(action)

    def try_take(self, action: str) -> bool:
        """Take one token for ``action`` if one exists now; never waits."""
        if not self.settings.enabled:
            return True
        bucket = self.bucket(api_class(action))
        return (
            self.store.take_tokens(api_class(action), rate=bucket.rate, burst=bucket.burst, max_wait=0) == 0
        )

    def acquire(self, action: str) -> None:
        """Take one token for ``action``, sleeping until it exists; raise a throttle when too far off.

        Inside :func:`prepaid` the first call of its action takes nothing: its token was taken.
        """
        if not self.settings.enabled:
            return
        if _PREPAID.get() == action:
            _PREPAID.set("")
            return
        wait = self.wait_time(action)
        if wait < 0:
            raise Ec2Error(
                f"{action}: fleet rate limit for {api_class(action)} calls exhausted for more than "
                f"{self.settings.max_wait_seconds:.0f}s",
                code="FleetRateLimited",
                retryable=True,
                reason="EC2Throttled",
            )
        if wait > 0:
            self._sleep(wait)
