"""The fleet status log: one structured line per status interval that tells an operator the fleet's shape.

:func:`status_line` (the body of ``vkec2.maintenance.status_log``) gathers the vkec2 version, OS and
CPU architecture of the process, the virtual nodes, pods by phase, warm-pool members by state (from
the Redis mirror), the depth of each Celery queue (ready messages in kombu's Redis lists, priority
lists included), the workers that answered a ping, and the EC2 calls and throttled answers made by
the whole fleet since the previous line (deltas of the ``ec2:*`` counters, the previous totals kept
in ``status:last``). The line is a single JSON object logged on the ``vkec2.status`` logger and kept
in ``status:last`` for the CLI and tests. The line also carries the Dedicated hosts of each host pool
(``hosts``: by state, host-hours allocated, how long until an idle one may be released).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from vkec2.store.redis_store import Store

log = logging.getLogger("vkec2.status")


def version() -> str:
    try:
        return metadata.version("vkec2")
    except metadata.PackageNotFoundError:
        return "unknown"


def _delta(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(now.items()) if v - before.get(k, 0)}


def status_line(
    store: Store,
    queues: Sequence[str],
    pools: dict[str, dict[str, int]],
    workers: Callable[[], int],
    hosts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute, log and remember the status line; returns it as a dict."""
    phases = Counter(rec.phase.value for rec in store.records())
    calls = store.ec2_calls()
    throttles = store.ec2_throttles()
    attempts = store.ec2_throttled_attempts()
    last = store.status_last()
    before_calls = json.loads(last.get("calls", "{}"))
    before_throttles = json.loads(last.get("throttles", "{}"))
    before_attempts = json.loads(last.get("throttled_attempts", "{}"))
    now = time.time()
    try:
        online = workers()
    except Exception as exc:  # a broken ping must not cost the line
        log.debug("worker ping failed: %s", exc)
        online = -1
    call_delta = _delta(calls, before_calls)
    line: dict[str, Any] = {
        "msg": "fleet status",
        "cluster": store.cluster,
        "version": version(),
        "os": platform.system().lower(),
        "arch": platform.machine(),
        "nodes": len(store.nodes()),
        "pods": dict(sorted(phases.items())),
        "warm_pools": pools,
        "hosts": hosts or {},
        "queues": store.queue_depths(queues),
        "workers": online,
        "ec2_calls": call_delta,
        "ec2_calls_total": sum(call_delta.values()),
        "ec2_throttles": _delta(throttles, before_throttles),
        "ec2_throttled_attempts": _delta(attempts, before_attempts),
        "interval_seconds": round(now - float(last["ts"]), 1) if "ts" in last else None,
    }
    text = json.dumps(line, sort_keys=False, separators=(",", ":"))
    store.put_status_last(
        {
            "line": text,
            "ts": repr(now),
            "calls": json.dumps(calls),
            "throttles": json.dumps(throttles),
            "throttled_attempts": json.dumps(attempts),
        }
    )
    log.info("%s", text)
    return line
