"""The node's resource usage for `/stats/summary` and `/metrics/resource`: one cached fan-out to agents.

A :class:`StatsCollector` asks the agent of every pod of the node that has a running instance for
its ``GetStats`` at once (a thread pool, each call with its own deadline), waits at most
``timeout`` for all of them together and keeps the answer (:class:`Scrape`) for ``ttl`` seconds,
so that metrics-server scraping every 15 s, Prometheus and ``kubectl get --raw`` together cost one
round of calls. Concurrent requests share the scrape in progress instead of starting another. An
agent that fails or does not answer in time is left out of that scrape, logged and counted
(``errors``, the ``scrape_error`` of ``/metrics/resource``); it never holds up the answer longer
than the timeout. Rendering is :mod:`.summary`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Protocol

from agent.stats import InstanceStats
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import PodRecord
from vkec2.domain.phases import Phase

log = logging.getLogger("producer.kubelet")

#: Fleet phases in which a pod's instance runs its workload and its agent can be asked.
SCRAPED_PHASES = frozenset({Phase.RUNNING, Phase.TERMINATING})


class StatsSource(Protocol):
    """What the collector needs of an agent client."""

    def stats(self, target: AgentTarget, timeout: float | None = None) -> InstanceStats: ...


@dataclass(frozen=True)
class PodUsage:
    """One pod's record and what its agent reported."""

    record: PodRecord
    stats: InstanceStats


@dataclass(frozen=True)
class Scrape:
    """One round of calls: when it was made (epoch seconds), the pods that answered, those left out."""

    time: float
    pods: tuple[PodUsage, ...]
    errors: int
    left_out: tuple[str, ...] = ()


def scraped(records: Iterable[PodRecord]) -> list[PodRecord]:
    """The pods whose agents are asked: running (or terminating) on an instance with a known agent."""
    return [
        r for r in records if r.phase in SCRAPED_PHASES and r.endpoint and r.instance_id and not r.deleted
    ]


class StatsCollector:
    """Cached, single-flight fan-out of ``GetStats`` to the agents of the node's running pods."""

    def __init__(
        self,
        records: Callable[[], Iterable[PodRecord]],
        source: Callable[[], StatsSource],
        *,
        timeout: float = 3.0,
        ttl: float = 5.0,
        workers: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = records
        self._source = source
        self.timeout = timeout
        self.ttl = ttl
        self._workers = workers
        self._clock = clock
        self._lock = threading.Lock()
        self._pool: futures.ThreadPoolExecutor | None = None
        self._last: Scrape | None = None
        self._at = 0.0

    def scrape(self) -> Scrape:
        """The latest scrape if younger than ``ttl``, else a new one (concurrent callers share it)."""
        with self._lock:
            if self._last is not None and self._clock() - self._at < self.ttl:
                return self._last
            scrape = self._fan_out()
            self._last, self._at = scrape, self._clock()
            return scrape

    def last(self) -> Scrape | None:
        """The latest scrape, however old (``None`` before the first); never calls an agent."""
        return self._last

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fan_out(self) -> Scrape:
        records = scraped(self._records())
        now = time.time()
        if not records:
            return Scrape(now, (), 0)
        if self._pool is None:
            self._pool = futures.ThreadPoolExecutor(self._workers, thread_name_prefix="kubelet-stats")
        source = self._source()
        calls = {
            self._pool.submit(source.stats, AgentTarget(r.endpoint, r.instance_id), self.timeout): r
            for r in records
        }
        done, late = futures.wait(calls, timeout=self.timeout + 0.25)
        pods: list[PodUsage] = []
        left_out: list[str] = []
        for call in late:
            call.cancel()
            r = calls[call]
            left_out.append(f"{r.namespace}/{r.name}")
            log.info(
                "stats of pod %s/%s left out: its agent did not answer in %gs",
                r.namespace,
                r.name,
                self.timeout,
            )
        for call in done:
            r = calls[call]
            exc = call.exception()
            if exc is not None:
                left_out.append(f"{r.namespace}/{r.name}")
                log.info("stats of pod %s/%s left out: %s", r.namespace, r.name, exc)
                continue
            pods.append(PodUsage(r, call.result()))
        pods.sort(key=lambda p: (p.record.namespace, p.record.name))
        return Scrape(now, tuple(pods), len(left_out), tuple(sorted(left_out)))
