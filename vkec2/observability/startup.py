"""One call that makes a long-running process observable: structured logs, tracing and ``/metrics``.

Processes that are not Celery workers or beat (the producer, and anything else started from the
``vkec2`` command) call :func:`start` once their configuration is loaded; Celery processes get the
same through the signal hooks of :mod:`vkec2.broker.hooks`. Each part follows its configuration
section (``logging``, ``tracing``, ``metrics``) and is off or quiet by default.
"""

from __future__ import annotations

import logging

from vkec2.config import Settings
from vkec2.observability import logs, metrics, tracing

log = logging.getLogger("vkec2.observability.startup")


def start(component: str, settings: Settings, level: int | str | None = None) -> metrics.MetricsServer | None:
    """Set up logs (replacing earlier root handlers), tracing, and the metrics server if configured."""
    logs.setup(settings.logging, component, level=level, replace=True)
    tracing.setup(settings.tracing, component)
    if settings.metrics.port is None:
        return None
    try:
        return metrics.serve(settings.metrics.port, settings.metrics.address)
    except OSError as exc:
        log.error(
            "metrics server not started on %s:%s: %s", settings.metrics.address, settings.metrics.port, exc
        )
        return None
