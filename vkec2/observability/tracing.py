"""OpenTelemetry tracing for the fleet: one trace from the producer's publish through a task to EC2 and agent.

Off by default (``tracing.exporter: none``): nothing is imported beyond this module and nothing is
instrumented, so an untraced fleet pays nothing. With ``console`` or ``otlp`` (OTLP over HTTP to
``tracing.otlp_endpoint``), :func:`setup` installs a tracer provider named after the component
(``vkec2-producer``, ``vkec2-worker`` ...) and three instrumentations: Celery (the publish span
injects its context into the task's message headers and the worker's task span continues it),
botocore (every EC2 call is a child span of the running task) and the gRPC client (every agent
call is a child span too). Spans go through one routing processor, so tests can send them to an
in-memory exporter with :func:`memory_exporter` and stop with :func:`shutdown`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from vkec2.config import TracingSettings

log = logging.getLogger("vkec2.observability.tracing")

_lock = threading.Lock()
_provider: TracerProvider | None = None
_router: Any = None
_instrumentors: list[Any] = []


def _make_router() -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class Router(SpanProcessor):
        """Forwards spans to the current target processor (swappable, unlike the provider's list)."""

        def __init__(self) -> None:
            self.target: SpanProcessor | None = None

        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            target = self.target
            if target is not None:
                target.on_start(span, parent_context)

        def on_end(self, span: ReadableSpan) -> None:
            target = self.target
            if target is not None:
                target.on_end(span)

        def shutdown(self) -> None:
            target, self.target = self.target, None
            if target is not None:
                target.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            target = self.target
            return True if target is None else bool(target.force_flush(timeout_millis))

    return Router()


def enabled() -> bool:
    """True once tracing was set up in this process."""
    return _router is not None and _router.target is not None


def _install(processor: SpanProcessor, service: str, ratio: float = 1.0) -> None:
    """Route spans to ``processor`` (installing the provider and instrumentations on first use)."""
    global _provider, _router
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    with _lock:
        if _provider is None:
            _router = _make_router()
            provider = TracerProvider(
                resource=Resource.create({"service.name": service}),
                sampler=ParentBased(TraceIdRatioBased(ratio)),
            )
            provider.add_span_processor(_router)
            trace.set_tracer_provider(provider)
            _provider = provider
            if trace.get_tracer_provider() is not provider:
                log.warning("another OpenTelemetry tracer provider is installed; vkec2 spans may not export")
        old, _router.target = _router.target, processor
        if old is not None:
            old.shutdown()
        if not _instrumentors:
            _instrument()


def _instrument() -> None:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient

    for instrumentor in (CeleryInstrumentor(), BotocoreInstrumentor(), GrpcInstrumentorClient()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
        _instrumentors.append(instrumentor)


def setup(settings: TracingSettings, component: str) -> bool:
    """Turn tracing on for this process per ``settings``; False (and nothing done) when it is off.

    Call it before the process creates its boto3 clients and gRPC channels (a worker does it in
    ``worker_process_init``, before its first task builds the fleet context).
    """
    if settings.exporter == "none":
        return False
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if settings.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = (
            OTLPSpanExporter(endpoint=settings.otlp_endpoint)
            if settings.otlp_endpoint
            else (OTLPSpanExporter())
        )
    _install(BatchSpanProcessor(exporter), f"{settings.service_name}-{component}", settings.sample_ratio)
    log.info("tracing on: %s exporter, service %s-%s", settings.exporter, settings.service_name, component)
    return True


def memory_exporter(service: str = "vkec2-test") -> InMemorySpanExporter:
    """Tests: trace everything in this process into a fresh in-memory exporter (spans end synchronously)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    _install(SimpleSpanProcessor(exporter), service)
    return exporter


def flush(timeout_millis: int = 5000) -> bool:
    """Export the spans still buffered (before a process exits)."""
    return True if _provider is None else bool(_provider.force_flush(timeout_millis))


def shutdown() -> None:
    """Flush, stop exporting and remove the instrumentations (the provider stays, idle)."""
    with _lock:
        for instrumentor in _instrumentors:
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        _instrumentors.clear()
        if _router is not None:
            _router.shutdown()
