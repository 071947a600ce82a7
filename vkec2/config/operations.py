"""Settings sections for fleet maintenance on beat and for observability.

Maintenance (docs/maintenance.md): the health sweep and its remediation breaker (``health``), the
RedBeat scheduler (``beat``), the Service Quotas refresh
(``quotas``), orphan GC (``gc``) and the fleet-wide EC2 token buckets (``rate_limits``).
Observability (docs/observability.md): the Prometheus endpoint (``metrics``), OpenTelemetry
(``tracing``), log lines (``logging``) and Flower (``flower``). Every section has defaults, and
everything observable is off or quiet by default, so a configuration that does not mention them is
unchanged. :class:`~vkec2.config.model.Settings` holds one of each.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vkec2.config.shapes import (
    INSTANCE_FAMILY_RE,
    Section,
    check_http_url,
    check_instance_type,
    check_quota_code,
)


class HealthSettings(Section):
    """Health sweep: how often, and after how many bad checks a pod is Unhealthy or Unknown."""

    interval_seconds: float = Field(default=10.0, gt=0)
    unhealthy_threshold: int = Field(default=3, ge=1)
    unknown_threshold: int = Field(default=6, ge=1)
    flapping_window_seconds: float = Field(default=300.0, gt=0)
    flapping_count: int = Field(default=4, ge=2)
    breaker_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of the agents checked that must fail the same way before the sweep stops "
        "replacing instances for their agents alone (the remediation circuit breaker opens).",
    )
    breaker_window_passes: int = Field(
        default=3, ge=1, description="Sweep passes whose checks are pooled to compute that share."
    )
    breaker_min_checks: int = Field(
        default=5,
        ge=1,
        description="Fewest checks in the window for the breaker to judge; a smaller fleet never opens it.",
    )
    max_remediations_per_interval: int | None = Field(
        default=None,
        ge=1,
        description="Agent-caused replacements per sweep interval; None: 10 % of the Running pods, "
        "at least 1.",
    )


class BeatSettings(Section):
    """Celery beat with RedBeat: one active replica holds a lock in Redis, the others stand by."""

    lock_timeout_seconds: int = Field(
        default=20,
        ge=2,
        description="How long the active beat's lock outlives it; a standby takes over after this.",
    )
    max_loop_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest sleep between beat ticks; the active beat extends its lock every tick.",
    )
    warm_pools_interval_seconds: float = Field(default=15.0, gt=0)
    hosts_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Period of vkec2.maintenance.hosts: Dedicated Hosts refreshed, released, allocated.",
    )
    resume_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Period of vkec2.maintenance.resume, which re-publishes overdue pod steps.",
    )
    pod_tags_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Period of vkec2.maintenance.pod_tags, which writes the pod tags of batched launches.",
    )
    liveness_seconds: float | None = Field(
        default=None,
        gt=0,
        description="No active beat for longer than this is reported (node condition, metric, log); "
        "None: three times the shortest period, at least 60 s.",
    )

    @model_validator(mode="after")
    def _lock_outlives_ticks(self) -> BeatSettings:
        if self.lock_timeout_seconds < 2 * self.max_loop_interval_seconds:
            raise ValueError(
                f"lock_timeout_seconds ({self.lock_timeout_seconds}) must be at least twice "
                f"max_loop_interval_seconds ({self.max_loop_interval_seconds}), or the active beat "
                "loses its lock between ticks and replicas take turns"
            )
        return self


class QuotaSettings(Section):
    """Service Quotas refresh: node capacity from the account's quotas (fallback: ``node``)."""

    enabled: bool = True
    interval_seconds: float = Field(default=300.0, gt=0)
    service_code: str = "ec2"
    codes: list[str] = Field(
        default_factory=lambda: ["L-1216C47A"],
        description="vCPU quota codes summed into the cpu capacity (L-1216C47A: On-Demand Standard).",
    )
    host_codes: dict[str, str] = Field(
        default_factory=dict,
        description="Instance family -> dedicated-host quota code (e.g. mac2 -> the Mac host quota).",
    )
    instance_types: list[str] = Field(
        default_factory=list,
        description="Types whose vCPUs/memory turn quotas into capacity; empty: ec2 + pool types.",
    )
    endpoint_url: str | None = Field(default=None, description="Service Quotas endpoint override.")

    @field_validator("codes")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        return [check_quota_code(code) for code in value]

    @field_validator("host_codes")
    @classmethod
    def _host_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for family, code in value.items():
            if not INSTANCE_FAMILY_RE.fullmatch(family):
                raise ValueError(f"not an instance family like mac2: {family!r}")
            check_quota_code(code)
        return value

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return [check_instance_type(v) for v in value]

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_http_url(value)


class GcSettings(Section):
    """Orphan GC: terminate cluster instances whose pod is unknown, after a grace, seen twice."""

    interval_seconds: float = Field(default=60.0, gt=0)
    grace_seconds: float = Field(default=600.0, ge=0)
    dry_run: bool = False


class TokenBucket(Section):
    """A token bucket: ``rate`` calls per second on average, bursts of up to ``burst``."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class RateLimitSettings(Section):
    """Fleet-wide EC2 call budgets per API class, shared by every worker through Redis.

    Defaults sit below AWS's default EC2 API request-rate buckets for an account.
    """

    enabled: bool = True
    run_instances: TokenBucket = Field(default_factory=lambda: TokenBucket(rate=2.0, burst=5))
    mutating: TokenBucket = Field(default_factory=lambda: TokenBucket(rate=4.0, burst=40))
    describe: TokenBucket = Field(default_factory=lambda: TokenBucket(rate=10.0, burst=50))
    instances: TokenBucket = Field(
        default_factory=lambda: TokenBucket(rate=2.0, burst=1000),
        description="Instances launched (AWS's RunInstances resource bucket: 1,000, refilled 2 per second).",
    )
    max_wait_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Longest a call waits for a token; beyond it the call fails as throttled (retried).",
    )


class MetricsSettings(Section):
    """The Prometheus endpoint (``/metrics`` and ``/healthz``) of a worker or the producer."""

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the metrics HTTP server; None: no server (metrics are still counted).",
    )
    address: str = Field(default="127.0.0.1", description="Address the metrics server listens on.")


class TracingSettings(Section):
    """OpenTelemetry tracing: producer -> task -> EC2 call -> agent call in one trace."""

    exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where spans go; none: tracing is off and nothing is instrumented."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL (e.g. http://collector:4318/v1/traces); None: the SDK default.",
    )
    service_name: str = Field(
        default="vkec2", description="Prefix of the service name; the component is appended (vkec2-worker)."
    )
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="Share of new traces recorded.")

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_http_url(value)


class LoggingSettings(Section):
    """Log lines of every component: format, and how many context labels each line carries."""

    format: Literal["kv", "json"] = Field(
        default="kv", description="key=value lines, or one JSON object a line."
    )
    verbosity: int = Field(
        default=1,
        ge=1,
        le=2,
        description="1: pod uid/namespace/name and task id; 2: also thread, task name, agent endpoint.",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None, description="Log level; None: the component's own flag (celery -l, --log-level)."
    )


class FlowerSettings(Section):
    """Flower (``celery -A tasks flower``): basic auth, required outside local mode."""

    basic_auth: list[str] = Field(
        default_factory=list, description="user:password pairs Flower accepts (basic auth)."
    )
    local: bool = Field(default=False, description="Local mode: Flower may run without credentials.")

    @field_validator("basic_auth")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        for pair in value:
            user, sep, password = pair.partition(":")
            if not sep or not user or not password:
                raise ValueError("each entry must be user:password with both parts non-empty")
            if "," in pair:
                raise ValueError("a user:password pair may not contain ','")
        return value
