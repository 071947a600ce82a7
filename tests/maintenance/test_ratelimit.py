"""The fleet-wide token buckets (vkec2.ec2.ratelimit) on a real Redis, shared by many callers at once."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from vkec2.config import RateLimitSettings, TokenBucket
from vkec2.ec2.ratelimit import DESCRIBE, MUTATING, RUN_INSTANCES, RateLimiter, api_class
from vkec2.errors import Ec2Error
from vkec2.store.redis_store import Store


def test_api_classes() -> None:
    assert api_class("RunInstances") == RUN_INSTANCES
    assert api_class("DescribeInstances") == DESCRIBE
    assert api_class("DescribeInstanceTypes") == DESCRIBE
    assert api_class("TerminateInstances") == MUTATING
    assert api_class("CreateTags") == MUTATING


def test_callers_sharing_a_bucket_never_exceed_it(redis_url: str) -> None:
    rate, burst = 20.0, 5
    limits = RateLimitSettings(describe=TokenBucket(rate=rate, burst=burst), max_wait_seconds=30)
    cluster = f"rl-{uuid.uuid4().hex[:6]}"
    # Four "workers", each with its own connection and limiter, on one cluster's bucket.
    limiters = [RateLimiter(Store.from_url(redis_url, cluster), limits) for _ in range(4)]
    stamps: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 1.5

    def caller(limiter: RateLimiter) -> None:
        while time.monotonic() < stop:
            limiter.acquire("DescribeInstances")
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=caller, args=(lim,)) for lim in limiters for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stamps.sort()
    assert len(stamps) >= 20
    # Token bucket bound on every window: calls in [a, b] <= burst + rate * (b - a) (+1 for rounding).
    for i, a in enumerate(stamps):
        for j in range(i, len(stamps)):
            assert j - i + 1 <= burst + rate * (stamps[j] - a) + 1.5, (i, j, stamps[j] - a)


def test_a_wait_beyond_the_maximum_is_a_retryable_throttle(redis_url: str) -> None:
    limits = RateLimitSettings(run_instances=TokenBucket(rate=0.1, burst=1), max_wait_seconds=1)
    limiter = RateLimiter(Store.from_url(redis_url, f"rl-{uuid.uuid4().hex[:6]}"), limits)
    limiter.acquire("RunInstances")
    with pytest.raises(Ec2Error) as info:
        limiter.acquire("RunInstances")
    assert info.value.retryable and info.value.reason == "EC2Throttled"
    limiter.acquire("DescribeInstances")  # other classes are not affected
