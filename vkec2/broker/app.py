"""The Celery configuration of the fleet: broker settings for at-least-once delivery that survives a crash.

Late acks with reject-on-worker-lost and prefetch 1 mean a task is removed from Redis only after
it finished; a worker killed mid-task leaves its message unacknowledged, and kombu's Redis
transport restores it after the visibility timeout (longer than any countdown the tasks use, so a
scheduled step is never delivered twice by the broker itself). JSON only; one queue per kind of
work: ``pods`` (lifecycle), ``health`` (sweeps), ``maintenance`` (pools, quotas, GC, status); the
queue and task names are the wire contract of :mod:`vkec2.contract`.
:func:`make_app` builds an app from settings without importing any task, so the producer and the
CLI can publish by task name without loading worker code; :mod:`tasks.app` builds the workers' app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from celery import Celery
from kombu import Exchange, Queue

from vkec2 import contract
from vkec2.broker import hooks as observe
from vkec2.config import Settings
from vkec2.store.keys import redbeat_key_prefix

ROUTES = {contract.queue_pattern(queue): {"queue": queue} for queue in contract.QUEUES}


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """The periodic tasks (docs/maintenance.md); each expires after one period, so a late run is dropped."""

    def every(task: str, seconds: float) -> dict[str, object]:
        return {"task": task, "schedule": seconds, "options": {"expires": seconds}}

    return {task: every(task, seconds) for task, seconds in settings.beat_periods().items()}


def celery_settings(settings: Settings) -> dict[str, object]:
    """The Celery configuration for a fleet configured by ``settings``."""
    visibility = settings.celery.visibility_timeout_seconds
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # Scan for unacknowledged messages of dead workers often enough to honour the timeout.
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in contract.QUEUES
        ],
        "task_default_queue": contract.PODS_QUEUE,
        "task_default_exchange": contract.PODS_QUEUE,
        "task_default_routing_key": contract.PODS_QUEUE,
        "task_routes": ROUTES,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        # Beat: RedBeat keeps the schedule and a lock in Redis, so only one of several beats sends.
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "beat_schedule": beat_schedule(settings),
        "beat_max_loop_interval": settings.beat.max_loop_interval_seconds,
        "redbeat_redis_url": settings.redis_url,
        "redbeat_redis_options": {
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "health_check_interval": 30,
        },
        "redbeat_key_prefix": redbeat_key_prefix(settings.cluster_name),
        "redbeat_lock_timeout": settings.beat.lock_timeout_seconds,
    }


def worker_argv(name: str, *, concurrency: int, queues: Sequence[str] = contract.QUEUES) -> list[str]:
    """The command line of one worker process (thread pool) consuming ``queues``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        ",".join(queues),
        "-n",
        name,
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
    ]


def make_app(settings: Settings) -> Celery:
    """A Celery app bound to the broker of ``settings`` (the workers' tasks register on :data:`tasks.app`)."""
    celery_app = Celery("vkec2")
    celery_app.conf.update(celery_settings(settings))
    observe.install(celery_app, settings)  # logs, metrics, tracing, Flower auth (docs/observability.md)
    return celery_app
