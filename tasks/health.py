"""The health sweep task: ``vkec2.health.sweep``, sent by beat every ``health.interval_seconds``.

No arguments; idempotent (single-flight per cluster, and a pod is not re-checked within half an
interval, so a duplicate or a ``celery call`` replay counts nothing twice). The work is
:class:`vkec2.sweep.HealthSweep`; pods it replaces get a fresh ``vkec2.pods.create``.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from tasks.app import app
from tasks.maintenance import record_result, record_run, retry_throttled, sweeper
from tasks.runtime import fleet
from vkec2 import contract
from vkec2.errors import Ec2Error


@app.task(name=contract.HEALTH_SWEEP, bind=True)
def sweep(self: Task) -> dict[str, Any]:
    """Check every Running pod's instance and agent; mark, damp and remediate."""
    ctx = fleet()
    record_run(ctx, contract.HEALTH_SWEEP)
    try:
        report = sweeper(ctx).run()
    except Ec2Error as exc:
        raise retry_throttled(self, exc, ctx.settings.health.interval_seconds) from exc
    return record_result(ctx, contract.HEALTH_SWEEP, report.summary())
