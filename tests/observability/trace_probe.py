"""Run the producer's publish and a Celery worker in one process with an in-memory span exporter.

Usage: ``python -m tests.observability.trace_probe CONFIG UID``. With ``VKEC2_CONFIG`` pointing at
the test fleet's file (set before anything imports :mod:`tasks`), it installs the in-memory
exporter, starts a real worker on the real broker in a thread, publishes the pod's create through
the producer's :class:`~producer.fleet.FleetLink` (the desired spec must already be in Redis via
``CONFIG``'s cluster — this probe writes it), waits for the pod to run, and prints the finished
spans as JSON on stdout. It runs in its own process so the global tracer provider and the
instrumentation never leak into other tests.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    config, uid = argv
    os.environ["VKEC2_CONFIG"] = config
    from vkec2.observability import tracing

    exporter = tracing.memory_exporter("vkec2-trace-probe")

    from celery.contrib.testing.worker import start_worker

    from producer.fleet import FleetLink
    from tasks.app import app
    from tests.support.fleet import NODE, example_pod
    from vkec2.broker.app import make_app
    from vkec2.cli.procs import wait_until
    from vkec2.config import load_settings
    from vkec2.domain.models import Phase
    from vkec2.store.redis_store import Store

    settings = load_settings(config)
    store = Store.from_settings(settings)
    producer_app = make_app(settings)
    link = FleetLink(store, producer_app, NODE)
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, queues=["pods"], shutdown_timeout=30
    ):
        link.create(example_pod("traced-web", uid=uid))
        try:
            wait_until(lambda: (r := store.get(uid)) is not None and r.phase is Phase.RUNNING, 60, "Running")
        except TimeoutError:
            print(f"pod did not reach Running: {store.get(uid)}", file=sys.stderr)
            return 1
    tracing.flush()
    spans: list[dict[str, Any]] = []
    for span in exporter.get_finished_spans():
        ctx = span.get_span_context()
        assert ctx is not None
        spans.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
            }
        )
    tracing.shutdown()
    producer_app.close()
    store.redis.close()
    print(json.dumps(spans))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
