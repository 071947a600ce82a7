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
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vkec2.config import RateLimitSettings, TokenBucket
from vkec2.errors import Ec2Error
from vkec2.store.redis_store import Store

RUN_INSTANCES = "run_instances"
MUTATING = "mutating"
DESCRIBE = "describe"
API_CLASSES = (RUN_INSTANCES, MUTATING, DESCRIBE)


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

    def acquire(self, action: str) -> None:
        """Take one token for ``action``, sleeping until it exists; raise a throttle when too far off."""
        if not self.settings.enabled:
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
