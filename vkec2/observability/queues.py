"""The ``vkec2_queue_length{queue}`` gauge: ready messages per Celery queue, read at each scrape.

Workers register it next to the other scrape-time collectors (:func:`vkec2.observability.metrics.
watch_queue_lengths`, wired by the Celery hooks with the store's ``queue_depths``), so any worker's
``/metrics`` shows the fleet's current backlog — the signal of worker autoscaling (an HPA on this
metric, or KEDA reading the same Redis lists). prometheus_client has collectors for process state but
none that reads another system at scrape time; this one is a few lines over its ``Collector`` API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("vkec2.observability.queues")


class QueueLengthCollector(Collector):
    """``vkec2_queue_length{queue}``, read at each scrape from ``lengths`` (queue → ready messages)."""

    def __init__(self, lengths: Callable[[], Mapping[str, int]]) -> None:
        self._lengths = lengths

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "vkec2_queue_length",
            "Messages waiting in a Celery queue (its Redis lists, priorities included), read at scrape time.",
            labels=["queue"],
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            lengths = self._lengths()
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("queue length gauge unavailable: %s", exc)
            return
        for queue, length in sorted(lengths.items()):
            family.add_metric([queue], float(length))
        yield family
