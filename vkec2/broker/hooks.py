"""Celery hooks that make the fleet observable: log context, queue wait, task metrics, tracing, Flower.

:func:`install` is called by :func:`vkec2.broker.make_app` for every app it builds (workers, beat,
the producer's publishing app) and connects Celery's signals once per process:
``before_task_publish`` stamps each message's sent time in its headers (``vkec2_sent_at``);
``task_prerun`` observes the queue wait and binds the log context (task ID and name, and for a pod
task the pod's UID, namespace, name and agent endpoint, read from its record), ``task_postrun``
restores it and counts the task; ``setup_logging`` replaces Celery's log setup with
:mod:`vkec2.observability.logs`; ``worker_init``/``beat_init`` turn tracing on per ``tracing`` and
``worker_ready`` starts the ``/metrics`` server when ``metrics.port`` is set. A hidden preload
option guards ``celery -A tasks flower``: it exports ``flower.basic_auth`` for Flower, or refuses to
start without credentials outside local mode (:mod:`vkec2.observability.flower`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import threading
import time
import weakref
from contextvars import Token
from typing import Any

import click
from celery import Celery, Task, signals

from vkec2 import contract
from vkec2.config import Settings
from vkec2.fleet.breaker import fleet_signals
from vkec2.fleet.hosts import host_counts
from vkec2.fleet.warmpool import pool_counts
from vkec2.observability import logs, metrics, tracing
from vkec2.observability.flower import decide
from vkec2.store.redis_store import Store

log = logging.getLogger("vkec2.broker.hooks")

#: Message header holding the publish time (seconds since the epoch).
SENT_AT = contract.SENT_AT_HEADER

_apps: weakref.WeakKeyDictionary[Celery, Settings] = weakref.WeakKeyDictionary()
_last: Settings | None = None
_connected = False
_mutex = threading.Lock()
_tokens: dict[str, Token[Any]] = {}
_stores: dict[tuple[int, str, str], Store] = {}


def install(app: Celery, settings: Settings) -> None:
    """Observe ``app`` configured by ``settings`` (signals are connected once per process)."""
    global _last, _connected
    with _mutex:
        _apps[app] = settings
        _last = settings
        app.user_options["preload"].add(_flower_guard)
        if _connected:
            return
        signals.setup_logging.connect(_setup_logging, weak=False)
        signals.before_task_publish.connect(_before_publish, weak=False)
        signals.task_prerun.connect(_prerun, weak=False)
        signals.task_postrun.connect(_postrun, weak=False)
        signals.worker_init.connect(_worker_init, weak=False)
        signals.worker_process_init.connect(_worker_process_init, weak=False)
        signals.worker_ready.connect(_worker_ready, weak=False)
        signals.beat_init.connect(_beat_init, weak=False)
        _connected = True


def settings_of(app: Any = None) -> Settings:
    """The settings of ``app`` (or of the app built last in this process)."""
    found = _apps.get(app) if isinstance(app, Celery) else None
    if found is not None:
        return found
    if _last is None:
        from vkec2.config import load_settings

        return load_settings()
    return _last


# -- logging -------------------------------------------------------------------------------------


def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    # Connected, this receiver also stops Celery from configuring logging itself. Only a command
    # line process (celery worker/beat) is configured; an embedded worker (tests) keeps its host's.
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    logs.setup(settings_of().logging, ctx.info_name or "celery", level=loglevel)


# -- publishing and running tasks ----------------------------------------------------------------


def _before_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[SENT_AT] = time.time()  # overwrite: a retry must not keep its first publish time
    metrics.TASKS_PUBLISHED.labels(str(sender)).inc()


def _eta(request: Any) -> float:
    eta = getattr(request, "eta", None)
    if not eta:
        return 0.0
    try:
        stamp = eta if isinstance(eta, datetime.datetime) else datetime.datetime.fromisoformat(str(eta))
    except ValueError:
        return 0.0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def queue_wait(request: Any, started: float) -> float | None:
    """Seconds a task waited for a worker: from publication, or from its countdown's end."""
    sent = getattr(request, SENT_AT, None)
    if not isinstance(sent, int | float) or isinstance(sent, bool):
        return None
    ready = max(float(sent), _eta(request))
    return max(0.0, started - ready)


def _store(settings: Settings) -> Store:
    """One store per process and cluster, for reading pod records into log context and gauges."""
    key = (os.getpid(), settings.redis_url, settings.cluster_name)
    with _mutex:
        if key not in _stores:
            _stores[key] = Store.from_settings(settings)
        return _stores[key]


def _pod_fields(app: Any, uid: str) -> dict[str, str]:
    """Namespace, name and agent endpoint of a pod, from its record (empty when unavailable)."""
    try:
        store = _store(settings_of(app))
        return store.pod_fields(uid, "namespace", "name", "endpoint")
    except Exception as exc:  # logging context must never fail a task; the task meets the error itself
        log.debug("no log context for pod %s: %s", uid, exc)
        return {}


def _prerun(task_id: str | None = None, task: Task | None = None, kwargs: Any = None, **_: Any) -> None:
    if task is None or task_id is None:
        return
    wait = queue_wait(task.request, time.time())
    if wait is not None:
        metrics.QUEUE_WAIT_SECONDS.labels(task.name).observe(wait)
    context: dict[str, str] = {"task_id": task_id, "task": task.name}
    uid = kwargs.get("uid") if isinstance(kwargs, dict) else None
    if isinstance(uid, str) and uid:
        context["uid"] = uid
        if task.name not in contract.POD_TASKS:  # a pod task binds them from the record it locks
            context.update(_pod_fields(task.app, uid))
    _tokens[task_id] = logs.bind(**context)


def _postrun(
    task_id: str | None = None, task: Task | None = None, state: str | None = None, **_: Any
) -> None:
    if task is not None:
        metrics.TASKS_RUN.labels(task.name, state or "UNKNOWN").inc()
    token = _tokens.pop(task_id or "", None)
    if token is not None:
        with contextlib.suppress(ValueError):  # bound in another thread's context (never expected)
            logs.reset(token)


# -- process start: tracing and the metrics server -----------------------------------------------


def _worker_init(sender: Any = None, **_: Any) -> None:
    settings = settings_of(getattr(sender, "app", None))
    tracing.setup(settings.tracing, "worker")
    pool = str(getattr(sender, "pool_cls", "") or "")
    if (
        settings.metrics.port is not None
        and "prefork" in pool.lower()
        and not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    ):
        log.warning(
            "prefork pool without PROMETHEUS_MULTIPROC_DIR: /metrics shows only the parent process's "
            "counts (use -P threads, or set PROMETHEUS_MULTIPROC_DIR; see docs/observability.md)"
        )


def _worker_process_init(**_: Any) -> None:
    # A forked child inherits the parent's tracing; a spawned one (no fork) sets it up itself.
    if not tracing.enabled():
        tracing.setup(settings_of().tracing, "worker")


def _worker_ready(sender: Any = None, **_: Any) -> None:
    settings = settings_of(getattr(sender, "app", None))
    if settings.metrics.port is None:
        return
    metrics.watch_warm_pools(
        lambda: {pool.name: pool_counts(_store(settings), pool.name) for pool in settings.warm_pools}
    )
    metrics.watch_hosts(lambda: host_counts(settings, _store(settings)))
    metrics.watch_fleet_signals(lambda: fleet_signals(_store(settings), settings.beat_liveness_seconds()))
    metrics.watch_queue_lengths(lambda: _store(settings).queue_depths(contract.QUEUES))
    try:
        metrics.serve(settings.metrics.port, settings.metrics.address)
    except OSError as exc:  # e.g. two workers on one host with one port: run on without metrics
        log.error(
            "metrics server not started on %s:%s: %s", settings.metrics.address, settings.metrics.port, exc
        )


def _beat_init(sender: Any = None, **_: Any) -> None:
    tracing.setup(settings_of(getattr(sender, "app", None)).tracing, "beat")


# -- Flower ------------------------------------------------------------------------------------


def _guard_flower(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if ctx.command.name != "flower":
        return
    app = getattr(ctx.obj, "app", None)
    argv = [str(a) for a in ctx.params.get("tornado_argv", ())] or sys.argv[1:]
    decision = decide(settings_of(app).flower, argv, os.environ)
    if decision.error is not None:
        raise click.UsageError(decision.error, ctx)
    os.environ.update(decision.env)  # Flower reads FLOWER_* right after its options are parsed


_flower_guard = click.Option(
    ["--vkec2-flower-guard"], hidden=True, expose_value=False, is_flag=True, callback=_guard_flower
)
