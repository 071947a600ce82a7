"""The Celery configuration of the fleet: broker settings for at-least-once delivery that survives a crash.

Late acks with reject-on-worker-lost and prefetch 1 mean a task is removed from Redis only after
it finished; a worker killed mid-task leaves its message unacknowledged, and kombu's Redis
transport restores it after the visibility timeout (longer than any countdown the tasks use, so a
scheduled step is never delivered twice by the broker itself). JSON only; one queue per kind of
work: ``pods`` (lifecycle), ``health`` (sweeps), ``maintenance`` (pools, quotas, GC, status); the
queue and task names are the wire contract of :mod:`vkec2.contract`. Every key and channel kombu
uses (queues, bindings, unacked messages, pidbox, events) carries the cluster's prefix, so clusters
sharing one Redis neither take each other's tasks nor answer each other's pings; a ``sentinel://``
``redis_url`` reaches the master through Sentinel for kombu and RedBeat alike (docs/redis.md), and
a ``rediss://`` one verifies the server's certificate in both (:func:`broker_tls`).
:func:`make_app` builds an app from settings without importing any task, so the producer and the
CLI can publish by task name without loading worker code; :mod:`tasks.app` builds the workers' app.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Queue

from vkec2 import contract
from vkec2.broker import hooks as observe
from vkec2.config import Settings
from vkec2.config.redis_url import parse_redis_url
from vkec2.store.keys import celery_key_prefix, redbeat_key_prefix

#: Seconds RedBeat retries a command while Sentinel fails the master over.
BEAT_RETRY_SECONDS = 30.0

ROUTES = {contract.queue_pattern(queue): {"queue": queue} for queue in contract.QUEUES}


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """The periodic tasks (docs/maintenance.md); each expires after one period, so a late run is dropped."""

    def every(task: str, seconds: float) -> dict[str, object]:
        return {"task": task, "schedule": seconds, "options": {"expires": seconds}}

    return {task: every(task, seconds) for task, seconds in settings.beat_periods().items()}


def redbeat_settings(settings: Settings) -> dict[str, object]:
    """Where RedBeat keeps the schedule and its lock: the fleet's Redis, found through Sentinel if so
    configured (RedBeat then retries a command for :data:`BEAT_RETRY_SECONDS` across a fail-over)."""
    options: dict[str, object] = {"socket_timeout": 30}
    target = parse_redis_url(settings.redis_url)
    if not target.is_sentinel:
        options.update(socket_connect_timeout=5, health_check_interval=30)
        return {"redbeat_redis_url": settings.redis_url, "redbeat_redis_options": options}
    options.update(
        sentinels=list(target.sentinels),
        service_name=settings.redis_sentinel_master,
        password=target.password,
        username=target.username,
        db=target.db,
        retry_period=BEAT_RETRY_SECONDS,
    )
    return {"redbeat_redis_url": "redis-sentinel://", "redbeat_redis_options": options}


def broker_tls(settings: Settings) -> dict[str, object]:
    """For a ``rediss://`` URL, require a verified server certificate: kombu alone would connect with
    ``CERT_NONE`` (RedBeat reads the same option); the system's CA bundle, or ``SSL_CERT_FILE``,
    is the trust store."""
    if urlsplit(settings.redis_url).scheme != "rediss":
        return {}
    return {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}


def celery_settings(settings: Settings) -> dict[str, object]:
    """The Celery configuration for a fleet configured by ``settings``."""
    visibility = settings.celery.visibility_timeout_seconds
    transport: dict[str, object] = {
        "visibility_timeout": visibility,
        # Scan for unacknowledged messages of dead workers often enough to honour the timeout.
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
        # Queues, bindings, unacked messages, pidbox (control) and events of this cluster only.
        "global_keyprefix": celery_key_prefix(settings.cluster_name),
    }
    if settings.redis_sentinel_master is not None:
        transport["master_name"] = settings.redis_sentinel_master
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        **broker_tls(settings),
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
        **redbeat_settings(settings),
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
