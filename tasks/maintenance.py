"""The periodic maintenance tasks beat sends: warm pools, quota refresh, status log, orphan GC, resume, hosts.

``vkec2.maintenance.warm_pools`` (optional ``pool``), ``vkec2.maintenance.quotas``,
``vkec2.maintenance.status_log``, ``vkec2.maintenance.gc``, ``vkec2.maintenance.resume`` (pod
steps overdue, published again), ``vkec2.maintenance.hosts`` (the Dedicated-host pools
refreshed from EC2, idle hosts released, ``min_hosts`` allocated) and
``vkec2.maintenance.pod_tags`` (the pod tags of batch-launched instances) take keyword arguments only and are
idempotent: each reads the world (EC2 tags, Redis) and converges it, under a per-cluster
single-flight lock, so a duplicate delivery or a ``celery call`` replay changes nothing twice. Beat
gives each an ``expires`` of one period (see :func:`vkec2.broker.beat_schedule`), so a run that could
not start in time is dropped instead of piling up. Each run is stamped in
``maintenance:runs:{task}`` (newest first, 100 kept). The work itself lives in :mod:`vkec2`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from tasks.app import app
from tasks.runtime import Fleet, fleet
from vkec2 import contract
from vkec2.domain.models import DueStep
from vkec2.errors import Ec2Error
from vkec2.fleet.gc import OrphanGc
from vkec2.fleet.hosts import HostPools, host_summary
from vkec2.fleet.podtags import PodTags
from vkec2.fleet.quotas import QuotaRefresh
from vkec2.fleet.resume import Resume
from vkec2.fleet.statuslog import status_line
from vkec2.fleet.sweep import HealthSweep, remediate_lost
from vkec2.fleet.warmpool import WarmPools

log = logging.getLogger(__name__)

T = TypeVar("T")
RUNS_KEPT = 100
PERIODIC_RETRIES = 2


def record_run(ctx: Fleet, task: str) -> None:
    """Stamp one run of a periodic task (operators and tests read it)."""
    ctx.store.record_run(task, keep=RUNS_KEPT)


def record_result(ctx: Fleet, task: str, result: T) -> T:
    """Keep the summary of a finished run (results are not stored by Celery); returns ``result``."""
    ctx.store.record_result(task, result)
    return result


def retry_throttled(task: Task, exc: Ec2Error, period: float) -> Exception:
    """Retry a periodic task hit by EC2 throttling, with jitter, well within its period."""
    if not exc.retryable:
        raise exc
    countdown = get_exponential_backoff_interval(
        factor=1, retries=task.request.retries, maximum=max(1, int(period / 2)), full_jitter=True
    )
    retry: Exception = task.retry(exc=exc, countdown=countdown, max_retries=PERIODIC_RETRIES)
    return retry


def send(task: str, uid: str, generation: int | None = None) -> None:
    """Send a pod task from outside its chain (it takes the chain over)."""
    app.send_task(task, kwargs=contract.pod_task_kwargs(uid, generation))


def publish(task: str, uid: str) -> None:
    """Send a pod task (a create after remediation, or a stalled create/delete resumed); it is due now."""
    fleet().store.expect_step(DueStep(uid, task), time.time())
    send(task, uid)


def sweeper(ctx: Fleet) -> HealthSweep:
    return HealthSweep(ctx.settings, ctx.store, ctx.ec2, ctx.agents, ctx.lifecycle, publish)


def pools_of(ctx: Fleet) -> WarmPools:
    """The warm pools, with the fleet's bootstrap when it runs mTLS (members join bootstrapped)."""
    boot = ctx.bootstrap
    return WarmPools(
        ctx.settings,
        ctx.store,
        ctx.ec2,
        ctx.agents,
        bootstrap=boot.bootstrap if boot is not None else None,
        trust=boot.trust if boot is not None else None,
    )


@app.task(name=contract.WARM_POOLS, bind=True)
def warm_pools(self: Task, pool: str | None = None) -> list[dict[str, Any]]:
    """Reconcile the warm pools (one, or all when ``pool`` is None) with their desired counts."""
    ctx = fleet()
    record_run(ctx, contract.WARM_POOLS)
    try:
        reports = pools_of(ctx).reconcile_all(pool)
    except Ec2Error as exc:
        raise retry_throttled(self, exc, ctx.settings.beat.warm_pools_interval_seconds) from exc
    return record_result(ctx, contract.WARM_POOLS, [r.summary() for r in reports])


@app.task(name=contract.QUOTAS, bind=True)
def quotas(self: Task) -> dict[str, str]:
    """Refresh node capacity from Service Quotas (configured capacity when unavailable)."""
    ctx = fleet()
    record_run(ctx, contract.QUOTAS)
    fields = QuotaRefresh(ctx.settings, ctx.store, ctx.ec2).refresh().fields()
    return record_result(ctx, contract.QUOTAS, fields)


@app.task(name=contract.STATUS_LOG, bind=True)
def status_log(self: Task) -> dict[str, Any]:
    """Log the one-line fleet status."""
    ctx = fleet()
    record_run(ctx, contract.STATUS_LOG)
    pools = pools_of(ctx)
    by_pool = {p.name: pools.counts(p.name) for p in ctx.settings.warm_pools}

    def workers() -> int:
        return len(app.control.ping(timeout=1.0) or [])

    hosts = host_summary(ctx.settings, ctx.store, time.time())
    line = status_line(ctx.store, contract.QUEUES, by_pool, workers, hosts)
    return record_result(ctx, contract.STATUS_LOG, line)


@app.task(name=contract.ORPHAN_GC, bind=True)
def gc(self: Task) -> dict[str, Any]:
    """Terminate orphan instances (grace period, two consecutive sightings; dry-run only reports)."""
    ctx = fleet()
    record_run(ctx, contract.ORPHAN_GC)
    sweep = sweeper(ctx)
    collector = OrphanGc(
        ctx.settings,
        ctx.store,
        ctx.ec2,
        on_lost=lambda live: remediate_lost(sweep, ctx.store.records(), live),
    )
    try:
        report = collector.run()
    except Ec2Error as exc:
        raise retry_throttled(self, exc, ctx.settings.gc.interval_seconds) from exc
    return record_result(ctx, contract.ORPHAN_GC, report.summary())


@app.task(name=contract.RESUME, bind=True)
def resume(self: Task) -> dict[str, object]:
    """Publish again the pod steps (create, delete) that are overdue and whose pod lock is free."""
    ctx = fleet()
    record_run(ctx, contract.RESUME)
    report = Resume(ctx.settings, ctx.store, send).run()
    return record_result(ctx, contract.RESUME, report.summary())


@app.task(name=contract.HOSTS, bind=True)
def hosts(self: Task) -> dict[str, Any]:
    """Refresh the host pools from EC2, free the slots of gone instances, release idle hosts, allocate."""
    ctx = fleet()
    record_run(ctx, contract.HOSTS)
    try:
        report = HostPools(ctx.settings, ctx.store, ctx.ec2).run()
    except Ec2Error as exc:
        raise retry_throttled(self, exc, ctx.settings.beat.hosts_interval_seconds) from exc
    return record_result(ctx, contract.HOSTS, report.summary())


@app.task(name=contract.POD_TAGS, bind=True)
def pod_tags(self: Task) -> dict[str, int]:
    """Write the pod tags of batch-launched instances that the free mutating tokens allow (no waiting)."""
    ctx = fleet()
    record_run(ctx, contract.POD_TAGS)
    report = PodTags(ctx.store, ctx.ec2, ctx.limiter).run()
    return record_result(ctx, contract.POD_TAGS, report.summary())
