"""``kubelet_stats``: how the producer's kubelet API gathers resource usage from the node's agents.

``/stats/summary`` and ``/metrics/resource`` ask every running pod's agent for its ``GetStats`` at
once; ``timeout_seconds`` bounds the whole round (a slower agent is left out of it, never waited
for) and ``cache_seconds`` is how long a round's answer is reused by every scraper (0: a round per
request). See docs/producer.md, "Kubelet API".
"""

from __future__ import annotations

from pydantic import Field

from vkec2.config.shapes import Section


class KubeletStats(Section):
    """The fan-out of the kubelet API's stats endpoints."""

    timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    cache_seconds: float = Field(default=5.0, ge=0, le=300)
