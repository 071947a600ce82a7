"""EC2 call accounting and the fleet-wide EC2 token buckets in Redis, shared by every worker.

The EC2 gateway counts each API call (and each throttled answer) per action in ``ec2:calls`` and
``ec2:throttles``; the rate limiter's botocore hook counts throttled HTTP attempts in
``ec2:throttled_attempts``. The status log reads all three. :meth:`Ec2Accounting.take_tokens`
draws from the token bucket ``ratelimit:{class}`` of one API class in one Lua script on Redis's
own clock (see :data:`vkec2.store.scripts.TAKE_TOKENS`), so all workers share one budget.
"""

from __future__ import annotations

from typing import cast

from vkec2.store.base import StoreBase


class Ec2Accounting(StoreBase):
    """Counters of the fleet's EC2 calls and its token buckets."""

    def count_ec2_call(self, action: str, throttled: bool = False) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.ec2_calls(), action, 1)
        if throttled:
            pipe.hincrby(self.keys.ec2_throttles(), action, 1)
        pipe.execute()

    def count_throttled_attempt(self, action: str) -> None:
        """Count one HTTP attempt of ``action`` that EC2 throttled (botocore retries included)."""
        self.redis.hincrby(self.keys.ec2_throttled_attempts(), action, 1)

    def _counters(self, key: str) -> dict[str, int]:
        raw = cast(dict[str, str], self.redis.hgetall(key))
        return {k: int(v) for k, v in raw.items()}

    def ec2_calls(self) -> dict[str, int]:
        """EC2 API action -> calls made by the fleet."""
        return self._counters(self.keys.ec2_calls())

    def ec2_throttles(self) -> dict[str, int]:
        """EC2 API action -> calls answered with a throttle."""
        return self._counters(self.keys.ec2_throttles())

    def ec2_throttled_attempts(self) -> dict[str, int]:
        """EC2 API action -> HTTP attempts throttled (botocore's retries too)."""
        return self._counters(self.keys.ec2_throttled_attempts())

    def take_tokens(self, bucket: str, n: int = 1, *, rate: float, burst: float, max_wait: float) -> float:
        """Reserve ``n`` tokens of ``bucket``: seconds until they exist, or -1 when beyond ``max_wait``.

        The bucket refills at ``rate`` tokens per second up to ``burst``. A reservation that must
        wait is still taken (the caller sleeps, then proceeds); one beyond ``max_wait`` is not.
        """
        return float(
            self.scripts.take_tokens(keys=[self.keys.ratelimit(bucket)], args=[rate, burst, max_wait, n])
        )
