"""Prometheus metrics of the fleet: every ``vkec2_*`` metric is defined here, and the ``/metrics`` server.

Workers and the producer count into one process-wide :data:`REGISTRY` (counters for pods, EC2 calls,
launches, terminations, throttles, agent calls, health outcomes, remediation breaker transitions and
the producer's status outbox; histograms for each lifecycle phase: queue wait, RunInstances, boot,
agent ready, launch), and each can serve it with :func:`serve` —
prometheus_client's WSGI exposition app on its threading WSGI server, in a daemon thread, answering
``/metrics`` (the exposition format) and ``/healthz`` (``ok``). The warm-pool depth gauge is read from
the Redis mirror at scrape time by :class:`WarmPoolCollector` (wired by the Celery hooks), so every
scrape shows the fleet's current pools whichever worker answers; so are the remediation breaker's
and beat liveness gauges (:class:`FleetSignalsCollector`). Counting is a few in-memory operations
per event and needs no server; with Celery's prefork pool, set ``PROMETHEUS_MULTIPROC_DIR`` so the
children's counts reach the parent's server (see docs/observability.md). The names follow the original
provider's where one applies. The Dedicated-host gauge
``vkec2_hosts{pool,state}`` (:class:`HostCollector`) is read from Redis the same way, and so is the
backlog gauge ``vkec2_queue_length{queue}`` (:mod:`vkec2.observability.queues`).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from vkec2.domain import phases
from vkec2.domain.beat import BeatLiveness
from vkec2.domain.breaker import BreakerState
from vkec2.domain.models import Phase, PodRecord
from vkec2.observability.queues import QueueLengthCollector

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("vkec2.observability.metrics")

#: Every vkec2 metric is registered here (not in prometheus_client's default registry, which
#: other libraries such as Flower also use).
REGISTRY = CollectorRegistry(auto_describe=True)

#: Buckets for waits that last from milliseconds (a queue hop) to many minutes (a Mac's boot).
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 2400, float("inf"))
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

# -- pods ------------------------------------------------------------------------------------

PODS_CREATED = Counter(
    "vkec2_pods_created",
    "Pods that got their first instance (launched, adopted or claimed).",
    registry=REGISTRY,
)
PODS_DELETED = Counter("vkec2_pods_deleted", "Pods whose delete completed (Terminated).", registry=REGISTRY)
REDIS_DATA_LOSSES = Counter(
    "vkec2_redis_data_losses",
    "Times a producer found the Redis epoch changed (Redis lost its data) and relisted its pods.",
    registry=REGISTRY,
)
PHASE_TRANSITIONS = Counter(
    "vkec2_pod_phase_transitions",
    "Pod phase changes recorded by workers, by new phase.",
    ["phase"],
    registry=REGISTRY,
)

# -- the producer's status path ------------------------------------------------------------------

STATUS_EVENTS = Counter(
    "vkec2_status_events",
    "Status outbox entries the producer settled or retried, by outcome (applied, retried, superseded, "
    "dead_lettered, malformed, trimmed).",
    ["outcome"],
    registry=REGISTRY,
)
STATUS_RESYNC_WRITES = Counter(
    "vkec2_status_resync_writes",
    "Pod statuses a periodic resync found out of date and rewrote from the pod record.",
    registry=REGISTRY,
)

# -- EC2 -------------------------------------------------------------------------------------

EC2_CALLS = Counter(
    "vkec2_ec2_calls",
    "EC2 API calls, by action and outcome (ok, throttled, error, unreachable, rate_limited).",
    ["action", "outcome"],
    registry=REGISTRY,
)
EC2_THROTTLES = Counter(
    "vkec2_ec2_throttles",
    "EC2 API calls that failed throttled after botocore's retries, by action.",
    ["action"],
    registry=REGISTRY,
)
EC2_LAUNCHED = Counter(
    "vkec2_ec2_launched", "Instances launched (RunInstances succeeded).", registry=REGISTRY
)
EC2_LAUNCH_ERRORS = Counter(
    "vkec2_ec2_launch_errors",
    "RunInstances calls that failed (any error, throttles included).",
    registry=REGISTRY,
)
EC2_TERMINATED = Counter(
    "vkec2_ec2_terminated", "Instances whose TerminateInstances call succeeded.", registry=REGISTRY
)
RUN_INSTANCES_SECONDS = Histogram(
    "vkec2_ec2_run_instances_seconds",
    "Latency of RunInstances calls (after any rate-limit wait).",
    buckets=CALL_BUCKETS,
    registry=REGISTRY,
)

# -- agents and health ------------------------------------------------------------------------

AGENT_CALLS = Counter(
    "vkec2_agent_calls",
    "Unary gRPC calls to agents, by method and status code.",
    ["method", "code"],
    registry=REGISTRY,
)
HEALTH_CHECKS = Counter(
    "vkec2_health_checks",
    "Health sweep checks of a pod, by outcome (ok, failed, unknown).",
    ["outcome"],
    registry=REGISTRY,
)

BREAKER_TRANSITIONS = Counter(
    "vkec2_remediation_breaker_transitions",
    "Transitions of the health sweep's remediation circuit breaker seen by this worker, by new state.",
    ["state"],
    registry=REGISTRY,
)

# -- tasks and lifecycle phases ------------------------------------------------------------------

TASKS_PUBLISHED = Counter(
    "vkec2_tasks_published",
    "Tasks published to the broker by this process, by task name.",
    ["task"],
    registry=REGISTRY,
)
TASKS_RUN = Counter(
    "vkec2_tasks",
    "Tasks that finished on this worker, by task name and Celery state.",
    ["task", "state"],
    registry=REGISTRY,
)
QUEUE_WAIT_SECONDS = Histogram(
    "vkec2_task_queue_wait_seconds",
    "From a task's publication (or its countdown's end) to a worker starting it, by task name.",
    ["task"],
    buckets=PHASE_BUCKETS,
    registry=REGISTRY,
)
BOOT_SECONDS = Histogram(
    "vkec2_pod_boot_seconds",
    "From the pod getting its instance to the instance running.",
    buckets=PHASE_BUCKETS,
    registry=REGISTRY,
)
AGENT_READY_SECONDS = Histogram(
    "vkec2_pod_agent_ready_seconds",
    "From the instance running to its agent SERVING and accepting the workload.",
    buckets=PHASE_BUCKETS,
    registry=REGISTRY,
)
LAUNCH_SECONDS = Histogram(
    "vkec2_pod_launch_seconds",
    "From LaunchApplication accepted to the workload Running.",
    buckets=PHASE_BUCKETS,
    registry=REGISTRY,
)


def observe_phase(histogram: Histogram, since: float, at: float) -> None:
    """Observe ``at - since`` when ``since`` is known (non-zero) and not in the future."""
    if since > 0 and at >= since:
        histogram.observe(at - since)


def pod_transition(rec: PodRecord, previous: Phase, at: float) -> None:
    """Count and time a phase change just written for ``rec`` (``rec.phase`` is the new phase).

    The phases are timed from the stamps :func:`vkec2.domain.phases.phase_stamps` put in the record.
    """
    phase = rec.phase
    if phase is previous:
        return
    PHASE_TRANSITIONS.labels(phase.value).inc()
    if phases.first_provisioned(previous, phase, rec.attempt):
        PODS_CREATED.inc()
    if phase is Phase.BOOTING:
        observe_phase(BOOT_SECONDS, rec.launched_at, rec.running_at or at)
    elif phase is Phase.LAUNCHING:
        observe_phase(AGENT_READY_SECONDS, rec.running_at, rec.launching_at or at)
    elif phase is Phase.RUNNING:
        observe_phase(LAUNCH_SECONDS, rec.launching_at, at)
    elif phase is Phase.TERMINATED:
        PODS_DELETED.inc()


# -- hooks used by the EC2 accounting and the agent client ---------------------------------------


def ec2_call(action: str, outcome: str, seconds: float | None, response: Mapping[str, Any] | None) -> None:
    """Account one EC2 API call (counted by the hooks of :mod:`vkec2.ec2.accounting`).

    ``outcome`` is ``ok``, ``throttled``, ``error``, ``unreachable`` or ``rate_limited`` (refused by
    the fleet's limiter); ``seconds`` runs from the first attempt's send (after its rate-limit token)
    to the answer, ``None`` when nothing was sent; ``response`` is the parsed answer, if any.
    """
    EC2_CALLS.labels(action, outcome).inc()
    if outcome == "throttled":
        EC2_THROTTLES.labels(action).inc()
    if action == "RunInstances":
        if seconds is not None:
            RUN_INSTANCES_SECONDS.observe(seconds)
        if outcome == "ok":
            EC2_LAUNCHED.inc(len((response or {}).get("Instances", ())))
        elif outcome != "rate_limited":
            EC2_LAUNCH_ERRORS.inc()
    elif action == "TerminateInstances" and outcome == "ok":
        EC2_TERMINATED.inc(len((response or {}).get("TerminatingInstances", ())))


def _method_name(full: str) -> str:
    """``/vkec2.agent.v1.ApplicationLifecycle/LaunchApplication`` -> ``LaunchApplication``."""
    return full.rsplit("/", 1)[-1] or full


class _CallCounter(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        outcome = continuation(client_call_details, request)
        try:
            code = outcome.code()
        except Exception:  # a future that cannot tell (never expected for unary calls)
            code = None
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        AGENT_CALLS.labels(_method_name(str(method)), name).inc()
        return outcome


def count_health(outcomes: Iterable[str]) -> None:
    """Count health sweep check outcomes (``ok``, ``failed``, ``unknown``)."""
    for outcome, count in collections.Counter(str(o) for o in outcomes).items():  # one labels() each
        HEALTH_CHECKS.labels(outcome).inc(count)


def breaker_transition(state: str) -> None:
    """Count one opening or closing (``open``, ``closed``) of the remediation breaker."""
    BREAKER_TRANSITIONS.labels(state).inc()


def count_agent_calls(channel: grpc.Channel) -> grpc.Channel:
    """``channel`` with every unary call counted in ``vkec2_agent_calls_total``."""
    return grpc.intercept_channel(channel, _CallCounter())


# -- warm pools, read at scrape time ---------------------------------------------------------------


class WarmPoolCollector(Collector):
    """``vkec2_warm_pool_instances{pool,state}``, read at each scrape from ``counts`` (pool → state → n)."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "vkec2_warm_pool_instances",
            "Unclaimed warm-pool instances by pool and state (Redis mirror).",
            labels=["pool", "state"],
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            for pool, states in self._counts().items():
                for state, count in states.items():
                    family.add_metric([pool, state], count)
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("warm pool gauge unavailable: %s", exc)
        yield family


_pool_collector: WarmPoolCollector | None = None
_server_lock = threading.Lock()


def _register(collector: Collector) -> None:
    """Serve ``collector`` from the default registry and, if it has its own, from the server's."""
    REGISTRY.register(collector)
    if _server is not None and _server.registry is not REGISTRY:
        _server.registry.register(collector)


def watch_warm_pools(counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
    """Expose the warm-pool gauge of this process's fleet (once per process; later calls are no-ops)."""
    global _pool_collector
    with _server_lock:
        if _pool_collector is None:
            _pool_collector = WarmPoolCollector(counts)
            _register(_pool_collector)


class HostCollector(WarmPoolCollector):
    """``vkec2_hosts{pool,state}``: Dedicated hosts by host pool and state, read at each scrape."""

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "vkec2_hosts",
            "Dedicated hosts by host pool and state (available, occupied, scrubbing, unusable, released).",
            labels=["pool", "state"],
        )


_host_collector: HostCollector | None = None


def watch_hosts(counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
    """Expose the host gauge of this process's fleet (once per process; later calls are no-ops)."""
    global _host_collector
    with _server_lock:
        if _host_collector is None:
            _host_collector = HostCollector(counts)
            _register(_host_collector)


# -- fleet signals (the remediation breaker, beat liveness), read at scrape time ----------------


class FleetSignalsCollector(Collector):
    """Gauges read from Redis at each scrape: ``vkec2_remediation_paused`` (1 while the breaker is
    open), ``vkec2_remediation_failure_share`` (the failing share it judged), ``vkec2_beat_missing``
    (1 while no beat is active for too long) and ``vkec2_beat_last_run_seconds`` (the newest periodic
    run, epoch seconds; 0: never). ``read`` returns (breaker, beat liveness)."""

    def __init__(self, read: Callable[[], tuple[BreakerState, BeatLiveness]]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return self._families()

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "vkec2_remediation_paused",
                "1 while the health sweep's circuit breaker holds back agent-caused replacements.",
                labels=["reason"],
            ),
            GaugeMetricFamily(
                "vkec2_remediation_failure_share",
                "Share of the agent checks of the breaker's window that failed in the worst class.",
            ),
            GaugeMetricFamily("vkec2_beat_missing", "1 while the fleet has had no active beat for too long."),
            GaugeMetricFamily(
                "vkec2_beat_last_run_seconds", "When the newest periodic task run finished (epoch seconds)."
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        paused, share, missing, last = self._families()
        try:
            breaker, beat = self._read()
        except Exception as exc:  # a scrape must answer even when Redis does not
            log.warning("fleet signal gauges unavailable: %s", exc)
            return
        paused.add_metric([breaker.reason], 1.0 if breaker.open else 0.0)
        share.add_metric([], breaker.share)
        missing.add_metric([], 1.0 if beat.missing else 0.0)
        last.add_metric([], beat.last_run)
        yield from (paused, share, missing, last)


_signals_collector: FleetSignalsCollector | None = None


def watch_fleet_signals(read: Callable[[], tuple[BreakerState, BeatLiveness]]) -> None:
    """Expose the breaker and beat gauges of this process's fleet (once per process)."""
    global _signals_collector
    with _server_lock:
        if _signals_collector is None:
            _signals_collector = FleetSignalsCollector(read)
            _register(_signals_collector)


_queue_collector: QueueLengthCollector | None = None


def watch_queue_lengths(lengths: Callable[[], Mapping[str, int]]) -> None:
    """Expose ``vkec2_queue_length{queue}`` of this process's fleet (once per process)."""
    global _queue_collector
    with _server_lock:
        if _queue_collector is None:
            _queue_collector = QueueLengthCollector(lengths)
            _register(_queue_collector)


# -- the HTTP endpoint -------------------------------------------------------------------------


def _served_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: :data:`REGISTRY`, or every process's files in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return merged


def _app(registry: CollectorRegistry) -> WSGIApplication:
    """prometheus_client's exposition app on ``/metrics``, ``ok`` on ``/healthz``, 404 elsewhere."""
    exposition = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"only /metrics and /healthz live here\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line
        pass


class MetricsServer:
    """A running ``/metrics`` + ``/healthz`` server (prometheus_client's threading WSGI server)."""

    def __init__(self, httpd: WSGIServer, registry: CollectorRegistry) -> None:
        self.httpd = httpd
        self.registry = registry

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)


_server: MetricsServer | None = None


def serve(port: int, address: str = "127.0.0.1") -> MetricsServer:
    """Start the metrics server of this process (once: later calls return the running one).

    ``port`` 0 picks a free port (see :attr:`MetricsServer.port`).
    """
    global _server
    with _server_lock:
        if _server is not None:
            return _server
        registry = _served_registry()
        if registry is not REGISTRY:
            for collector in (_pool_collector, _host_collector, _signals_collector, _queue_collector):
                if collector is not None:
                    registry.register(collector)
        httpd = make_server(address, port, _app(registry), ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=httpd.serve_forever, name="vkec2-metrics", daemon=True).start()
        _server = MetricsServer(httpd, registry)
        log.info("metrics on http://%s:%d/metrics", address, _server.port)
        return _server
