"""Fleet configuration: one validated model for the producer, workers, beat and the CLI.

Settings come from one YAML or JSON file plus ``VKEC2_*`` environment overrides (nested keys
joined with ``__``, e.g. ``VKEC2_AGENT__PORT=8300``; lists and mappings as JSON), the environment
winning over the file. The original Go provider's ``config.json`` (``ClusterName``, ``VMConfig``,
``WarmPoolConfig`` ...) is recognised by its PascalCase keys and mapped onto this model so existing
users can switch unchanged. A bad value stops start-up with a :class:`InvalidConfig` (a
:class:`~vkec2.errors.ConfigError`) that lists every error by key path and by file or environment
variable; warnings go to the ``vkec2.config`` logger and are returned by :func:`load_config`. The
reference for every key is ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vkec2.errors import ConfigError

logger = logging.getLogger("vkec2.config")

#: Environment variable naming the configuration file when no path is given.
CONFIG_ENV = "VKEC2_CONFIG"
#: Prefix of every environment override.
ENV_PREFIX = "VKEC2_"

# ---------------------------------------------------------------------------------------------
# Shapes shared with vkec2.domain.podspec (annotations are checked with the same rules as the file).

IMAGE_ID_RE = re.compile(r"ami-[0-9a-z]{1,32}")
SUBNET_ID_RE = re.compile(r"subnet-[0-9a-z]{1,32}")
SECURITY_GROUP_ID_RE = re.compile(r"sg-[0-9a-z]{1,32}")
#: family[generation][attributes][-size].size, e.g. m5.large, mac2.metal, u-6tb1.metal, c7gn.16xlarge
INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]{0,30}\.[a-z0-9]{1,30}")
_PROFILE_NAME_RE = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_PROFILE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:instance-profile/[\w+=,.@/-]{1,512}", re.ASCII)
_KEY_PAIR_RE = re.compile(r"[\x20-\x7e]{1,255}")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*")
_QUANTITY_RE = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")

#: EC2 allows 50 tags per resource; vkec2 adds its own (cluster, node, pod UID, namespace, name).
MAX_USER_TAGS = 40
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
#: Tag key prefixes a user may not set: AWS's own and the ones vkec2 writes.
RESERVED_TAG_PREFIXES = ("aws:", "vkec2.io/")


def is_instance_profile(value: str) -> bool:
    """True for an instance profile name or ARN."""
    return bool(_PROFILE_NAME_RE.fullmatch(value) or _PROFILE_ARN_RE.fullmatch(value))


def is_key_pair(value: str) -> bool:
    """True for an EC2 key pair name (1-255 printable ASCII characters)."""
    return bool(_KEY_PAIR_RE.fullmatch(value)) and value.strip() == value


def tag_problem(key: str, value: str) -> str | None:
    """What is wrong with a user tag, or None when EC2 and vkec2 both accept it."""
    if not key:
        return "empty tag key"
    if len(key) > MAX_TAG_KEY:
        return f"tag key {key[:40]!r}... longer than {MAX_TAG_KEY} characters"
    if len(value) > MAX_TAG_VALUE:
        return f"value of tag {key!r} longer than {MAX_TAG_VALUE} characters"
    for prefix in RESERVED_TAG_PREFIXES:
        if key.lower().startswith(prefix):
            return f"tag key {key!r} uses the reserved prefix {prefix!r}"
    return None


def tags_problem(tags: Mapping[str, str]) -> str | None:
    """What is wrong with a set of user tags, or None."""
    if len(tags) > MAX_USER_TAGS:
        return f"{len(tags)} tags; at most {MAX_USER_TAGS} user tags are allowed"
    for key, value in tags.items():
        problem = tag_problem(key, value)
        if problem:
            return problem
    return None


def _check_image(value: str | None) -> str | None:
    if value is not None and not IMAGE_ID_RE.fullmatch(value):
        raise ValueError(f"not an AMI ID like ami-0123456789abcdef0: {value!r}")
    return value


def _check_instance_type(value: str) -> str:
    if not INSTANCE_TYPE_RE.fullmatch(value):
        raise ValueError(f"not an EC2 instance type like m5.large or mac2.metal: {value!r}")
    return value


def _check_ids(values: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for value in values:
        if not pattern.fullmatch(value):
            raise ValueError(f"not a {what}: {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate {what}s")
    return values


def _check_profile(value: str | None) -> str | None:
    if value is not None and not is_instance_profile(value):
        raise ValueError("not an instance profile name or ARN")
    return value


def _check_http_url(value: str | None) -> str | None:
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
    return value


def _check_key_pair(value: str | None) -> str | None:
    if value is not None and not is_key_pair(value):
        raise ValueError("not a key pair name (1-255 printable ASCII characters)")
    return value


# ---------------------------------------------------------------------------------------------
# The model (field names, nesting and defaults are the contract the rest of the fleet uses).


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsSettings(_Model):
    """How workers reach AWS (EC2, S3, Service Quotas)."""

    endpoint_url: str | None = Field(default=None, description="AWS endpoint override (moto, VPC endpoint).")
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_http_url(value)


class _LaunchTarget(_Model):
    """The EC2 parameters that choose an instance, shared by the defaults and every warm pool."""

    image_id: str | None = None
    instance_type: str = "m5.large"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    instance_profile: str | None = None
    key_pair: str | None = None

    _image = field_validator("image_id")(_check_image)
    _type = field_validator("instance_type")(_check_instance_type)
    _profile = field_validator("instance_profile")(_check_profile)
    _key = field_validator("key_pair")(_check_key_pair)

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        return _check_ids(value, SUBNET_ID_RE, "subnet ID like subnet-0123abcd")

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        return _check_ids(value, SECURITY_GROUP_ID_RE, "security group ID like sg-0123abcd")


class Ec2Defaults(_LaunchTarget):
    """Launch parameters used when a pod's annotations do not override them."""

    user_data: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problem = tags_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class WarmPool(_LaunchTarget):
    """A named pool of pre-launched instances that pods can claim.

    Unset fields (``image_id``, empty ``subnets``/``security_groups``, ``instance_profile``,
    ``key_pair``) inherit from ``ec2``; see :meth:`Settings.pool_launch_defaults`.
    """

    name: str
    desired_count: int = Field(default=0, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _DNS_LABEL_RE.fullmatch(value):
            raise ValueError(
                f"pool name {value!r} is not a DNS label (lowercase letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit)"
            )
        return value


class Backoff(_Model):
    """Reconnect backoff towards an agent (gRPC connection-backoff parameters)."""

    base_delay_seconds: float = Field(default=1.0, gt=0)
    multiplier: float = Field(default=1.6, ge=1)
    jitter: float = Field(default=0.2, ge=0, le=1)
    max_delay_seconds: float = Field(default=120.0, gt=0)

    @field_validator("max_delay_seconds")
    @classmethod
    def _max(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("base_delay_seconds")
        if base is not None and value < base:
            raise ValueError(f"smaller than base_delay_seconds ({base})")
        return value


class Keepalive(_Model):
    """gRPC keepalive pings towards an agent."""

    time_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=20.0, gt=0)


class AgentTls(_Model):
    """Fleet CA and the worker's client identity; absent means plaintext agents (local only)."""

    ca_cert_file: str
    ca_key_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> AgentTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file must be set together")
        return self


class AgentConnection(_Model):
    """How workers and the producer reach the agent on each instance."""

    port: int = Field(default=8200, ge=1, le=65535)
    endpoint: str = "private-ip"  # private-ip | public-ip | static:HOST:PORT
    call_timeout_seconds: float = Field(default=10.0, gt=0)
    connect_timeout_seconds: float = Field(default=1.0, gt=0)
    boot_timeout_seconds: float = Field(default=900.0, gt=0)
    backoff: Backoff = Field(default_factory=Backoff)
    keepalive: Keepalive = Field(default_factory=Keepalive)
    tls: AgentTls | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value in {"private-ip", "public-ip"}:
            return value
        if value.startswith("static:"):
            _parse_static(value)
            return value
        raise ValueError(f"must be private-ip, public-ip or static:HOST:PORT, not {value!r}")

    def static_endpoint(self) -> tuple[str, int] | None:
        """``(host, port)`` when ``endpoint`` is ``static:HOST:PORT``, else None."""
        return _parse_static(self.endpoint) if self.endpoint.startswith("static:") else None


def _parse_static(value: str) -> tuple[str, int]:
    host, sep, port_text = value[len("static:") :].rpartition(":")
    if not sep or not host:
        raise ValueError(f"static endpoint must be static:HOST:PORT, not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(host) or len(host) > 253:
            raise ValueError(f"static endpoint host {host!r} is not an IP address or host name") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"static endpoint port {port_text!r} is not an integer between 1 and 65535")
    return host, int(port_text)


class BootstrapAgent(_Model):
    """Where the agent artifact lives for the user-data installer."""

    s3_bucket: str | None = None
    s3_key: str | None = None
    init_data: str | None = None  # the original provider's BootstrapAgent.InitData: accepted, unused


class HealthSettings(_Model):
    """Health sweep: how often, and after how many bad checks a pod is Unhealthy or Unknown."""

    interval_seconds: float = Field(default=10.0, gt=0)
    unhealthy_threshold: int = Field(default=3, ge=1)
    unknown_threshold: int = Field(default=6, ge=1)
    flapping_window_seconds: float = Field(default=300.0, gt=0)
    flapping_count: int = Field(default=4, ge=2)


class NodeSettings(_Model):
    """The virtual node a producer registers; capacity is the fallback when quotas are unknown."""

    name: str | None = None
    os: Literal["linux", "darwin"] = "linux"
    kubelet_port: int = Field(default=10250, ge=1, le=65535)
    cpu: str = "96"
    memory: str = "384Gi"
    pods: str = "100"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(value)):
            raise ValueError(f"node name {value!r} is not a DNS subdomain")
        return value

    @field_validator("cpu", "memory", "pods")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY_RE.fullmatch(value):
            raise ValueError(f"not a Kubernetes quantity like 96, 500m or 384Gi: {value!r}")
        return value


class CelerySettings(_Model):
    """Broker and task behaviour; see vkec2/broker/app.py for how each value is used."""

    visibility_timeout_seconds: int = Field(default=600, ge=1)
    max_countdown_seconds: float = Field(default=30.0, gt=0)
    lock_ttl_seconds: float = Field(
        default=60.0, gt=0, description="How long a per-pod lock outlives a worker that died holding it."
    )

    @field_validator("max_countdown_seconds")
    @classmethod
    def _below_visibility(cls, value: float, info: ValidationInfo) -> float:
        visibility = info.data.get("visibility_timeout_seconds")
        if visibility is not None and value >= visibility:
            raise ValueError(
                f"must be shorter than visibility_timeout_seconds ({visibility}), or the broker "
                "redelivers counted-down tasks"
            )
        return value


# ---------------------------------------------------------------------------------------------
# Fleet maintenance on beat (health sweep, warm pools, quotas, status log, orphan GC, rate limits).
# See docs/maintenance.md; each section has defaults, so existing configurations are unchanged.


class BeatSettings(_Model):
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

    @model_validator(mode="after")
    def _lock_outlives_ticks(self) -> BeatSettings:
        if self.lock_timeout_seconds < 2 * self.max_loop_interval_seconds:
            raise ValueError(
                f"lock_timeout_seconds ({self.lock_timeout_seconds}) must be at least twice "
                f"max_loop_interval_seconds ({self.max_loop_interval_seconds}), or the active beat "
                "loses its lock between ticks and replicas take turns"
            )
        return self

    def failover_seconds(self) -> float:
        """Worst case before a standby beat takes over from one that was killed."""
        return self.lock_timeout_seconds + self.max_loop_interval_seconds


class QuotaSettings(_Model):
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
        for code in value:
            if not re.fullmatch(r"L-[0-9A-F]{8}", code):
                raise ValueError(f"not a quota code like L-1216C47A: {code!r}")
        return value

    @field_validator("host_codes")
    @classmethod
    def _host_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for family, code in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]*", family):
                raise ValueError(f"not an instance family like mac2: {family!r}")
            if not re.fullmatch(r"L-[0-9A-F]{8}", code):
                raise ValueError(f"not a quota code like L-1216C47A: {code!r}")
        return value

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return [_check_instance_type(v) for v in value]

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_http_url(value)


class GcSettings(_Model):
    """Orphan GC: terminate cluster instances whose pod is unknown, after a grace, seen twice."""

    interval_seconds: float = Field(default=60.0, gt=0)
    grace_seconds: float = Field(default=600.0, ge=0)
    dry_run: bool = False


class TokenBucket(_Model):
    """A token bucket: ``rate`` calls per second on average, bursts of up to ``burst``."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class RateLimitSettings(_Model):
    """Fleet-wide EC2 call budgets per API class, shared by every worker through Redis.

    Defaults sit below AWS's default EC2 API request-rate buckets for an account.
    """

    enabled: bool = True
    run_instances: TokenBucket = Field(default_factory=lambda: TokenBucket(rate=2.0, burst=20))
    mutating: TokenBucket = Field(default_factory=lambda: TokenBucket(rate=4.0, burst=40))
    describe: TokenBucket = Field(default_factory=lambda: TokenBucket(rate=10.0, burst=50))
    max_wait_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Longest a call waits for a token; beyond it the call fails as throttled (retried).",
    )


# Observability: metrics, tracing, logs and Flower (docs/observability.md). Everything is off or
# quiet by default, so existing configurations are unchanged.


class MetricsSettings(_Model):
    """The Prometheus endpoint (``/metrics`` and ``/healthz``) of a worker or the producer."""

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the metrics HTTP server; None: no server (metrics are still counted).",
    )
    address: str = Field(default="127.0.0.1", description="Address the metrics server listens on.")


class TracingSettings(_Model):
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
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {value!r}")
        return value


class LoggingSettings(_Model):
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


class FlowerSettings(_Model):
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


class Settings(_Model):
    """The whole configuration of one fleet (see docs/configuration.md)."""

    cluster_name: str = Field(default="vkec2", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    region: str = "us-west-2"
    redis_url: str = "redis://127.0.0.1:6379/0"
    status_interval_seconds: float = Field(default=15.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    ec2: Ec2Defaults = Field(default_factory=Ec2Defaults)
    warm_pools: list[WarmPool] = Field(default_factory=list)
    default_warm_pool: str | None = Field(
        default=None, description="Pool used by pods that ask for none; None means the first pool."
    )
    agent: AgentConnection = Field(default_factory=AgentConnection)
    bootstrap: BootstrapAgent = Field(default_factory=BootstrapAgent)
    health: HealthSettings = Field(default_factory=HealthSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    # Fleet maintenance (docs/maintenance.md).
    beat: BeatSettings = Field(default_factory=BeatSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    # Observability (docs/observability.md).
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION_RE.fullmatch(value):
            raise ValueError(f"not an AWS region like us-west-2: {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("warm_pools")
    @classmethod
    def _unique_pools(cls, value: list[WarmPool]) -> list[WarmPool]:
        seen: dict[str, int] = {}
        for index, pool in enumerate(value):
            if pool.name in seen:
                raise ValueError(f"duplicate pool name {pool.name!r} (entries {seen[pool.name]} and {index})")
            seen[pool.name] = index
        return value

    @field_validator("default_warm_pool")
    @classmethod
    def _known_pool(cls, value: str | None, info: ValidationInfo) -> str | None:
        pools = info.data.get("warm_pools")
        if value is None or pools is None:  # pools None: warm_pools itself failed validation
            return value
        names = [pool.name for pool in pools]
        if value not in names:
            configured = ", ".join(names) if names else "none"
            raise ValueError(f"no warm pool named {value!r} (configured: {configured})")
        return value

    def pool(self, name: str) -> WarmPool | None:
        """The warm pool called ``name``, or None."""
        return next((pool for pool in self.warm_pools if pool.name == name), None)

    def default_pool(self) -> WarmPool | None:
        """The pool used by pods that name none: ``default_warm_pool``, else the first pool."""
        if self.default_warm_pool is not None:
            return self.pool(self.default_warm_pool)
        return self.warm_pools[0] if self.warm_pools else None

    def pool_launch_defaults(self, pool: WarmPool) -> Ec2Defaults:
        """The EC2 parameters a pool's instances launch with: the pool's, unset ones from ``ec2``."""
        ec2 = self.ec2
        return Ec2Defaults(
            image_id=pool.image_id or ec2.image_id,
            instance_type=pool.instance_type,
            subnets=list(pool.subnets or ec2.subnets),
            security_groups=list(pool.security_groups or ec2.security_groups),
            instance_profile=pool.instance_profile or ec2.instance_profile,
            key_pair=pool.key_pair or ec2.key_pair,
            user_data=ec2.user_data,
            tags=dict(ec2.tags),
        )


# ---------------------------------------------------------------------------------------------
# Loading.


class InvalidConfig(ConfigError):
    """A :class:`ConfigError` that also keeps each error line (``source: key.path: problem``)."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class LoadedConfig:
    """The result of :func:`load_config`: settings, the warnings raised while loading, the file."""

    settings: Settings
    warnings: tuple[str, ...]
    path: str | None


_KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class _Origin:
    source: str  # the file name or "env VKEC2_..."
    label: str  # how the key is spelled there


class _Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.origins: dict[_KeyPath, _Origin] = {}


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate the configuration.

    ``path`` is a YAML or JSON file (the original provider's ``config.json`` is recognised); when
    None, ``$VKEC2_CONFIG`` names it, and without either only defaults and the environment apply.
    ``env`` (default ``os.environ``) supplies ``VKEC2_*`` overrides, which win over the file.
    Warnings are logged on the ``vkec2.config`` logger. Raises :class:`InvalidConfig` (a
    :class:`~vkec2.errors.ConfigError`) listing every error with its key path and source.
    """
    return load_config(path, env).settings


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Like :func:`load_settings`, also returning the warnings and the file that was read."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    out = _Collector()
    data: dict[str, Any] = {}
    source: str | None = None
    if path is not None:
        source = os.fspath(path)
        raw = _read_file(source)
        data = _from_legacy(raw, source, out) if _is_legacy(raw) else raw
    _apply_env(data, environ, out)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        out.errors.extend(_describe(exc, source, out.origins))
    if out.errors or settings is None:
        raise InvalidConfig(out.errors)
    for warning in out.warnings:
        logger.warning("%s", warning)
    return LoadedConfig(settings=settings, warnings=tuple(out.warnings), path=source)


def _read_file(source: str) -> dict[str, Any]:
    try:
        with open(source, "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise InvalidConfig([f"{source}: cannot read the configuration file: {problem}"]) from None
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidConfig([f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    is_json = source.lower().endswith(".json")
    parsed: Any
    if is_json or text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text, object_pairs_hook=_unique_pairs)
        except _DuplicateKey as exc:
            raise InvalidConfig([f"{source}: key {exc.key!r} appears twice in one object"]) from None
        except json.JSONDecodeError as exc:
            if is_json:
                raise InvalidConfig([f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from None
            parsed = _load_yaml(text, source)  # YAML flow mappings also start with "{"
    else:
        parsed = _load_yaml(text, source)
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise InvalidConfig([f"{source}: the top level must be a mapping, not {_kind(parsed)}"])
    bad_keys = [key for key in parsed if not isinstance(key, str)]
    if bad_keys:
        raise InvalidConfig([f"{source}: {key!r}: keys must be strings" for key in bad_keys])
    return parsed


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key if isinstance(key, str | int | float | bool) else id(key))
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise InvalidConfig([f"{where}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise InvalidConfig([f"{source}: invalid YAML: {exc}"]) from None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"a {type(value).__name__} ({value!r})"


# --- the original Go provider's config.json ----------------------------------------------------

#: Top-level keys of the original provider; any one of them marks a file as legacy.
LEGACY_TOP_LEVEL = (
    "ClusterName", "Region", "ManagementSubnet", "AWSClientTimeoutSeconds",
    "AWSClientDialerTimeoutSeconds", "StatusIntervalSeconds", "VMConfig", "BootstrapAgent",
    "HealthConfig", "VKVMAgentConnectionConfig", "WarmPoolConfig",
)  # fmt: skip

_Table = dict[str, "tuple[str, ...] | _Table | None"]

#: Legacy key -> new path (a tuple), nested section (a dict) or None (accepted, no longer applies).
_LEGACY: _Table = {
    "ClusterName": ("cluster_name",),
    "Region": ("region",),
    "ManagementSubnet": None,
    "AWSClientTimeoutSeconds": ("aws", "read_timeout_seconds"),
    "AWSClientDialerTimeoutSeconds": ("aws", "connect_timeout_seconds"),
    "StatusIntervalSeconds": ("status_interval_seconds",),
    "VMConfig": {"DefaultAMI": ("ec2", "image_id"), "InitData": ("ec2", "user_data")},
    "BootstrapAgent": {
        "S3Bucket": ("bootstrap", "s3_bucket"),
        "S3Key": ("bootstrap", "s3_key"),
        "InitData": ("bootstrap", "init_data"),
        "GRPCPort": ("agent", "port"),
    },
    "HealthConfig": {
        "UnhealthyThresholdCount": ("health", "unhealthy_threshold"),
        # The Go provider documented UnhealthyMaxCount as "maximum failure results before forcing
        # the provider to take action" (and never used it). The nearest vkec2 notion is the count
        # of failed checks after which the pod is given up on as Unknown.
        "UnhealthyMaxCount": ("health", "unknown_threshold"),
        "HealthCheckIntervalSeconds": ("health", "interval_seconds"),
    },
    "VKVMAgentConnectionConfig": {
        "Port": ("agent", "port"),
        "TimeoutSeconds": ("agent", "call_timeout_seconds"),
        "MinConnectTimeoutSeconds": ("agent", "connect_timeout_seconds"),
        "HealthCheckIntervalSeconds": ("health", "interval_seconds"),
        "Backoff": {
            "BaseDelaySeconds": ("agent", "backoff", "base_delay_seconds"),
            "Multiplier": ("agent", "backoff", "multiplier"),
            "Jitter": ("agent", "backoff", "jitter"),
            "MaxDelaySeconds": ("agent", "backoff", "max_delay_seconds"),
        },
        "Keepalive": {
            "TimeSeconds": ("agent", "keepalive", "time_seconds"),
            "TimeoutSeconds": ("agent", "keepalive", "timeout_seconds"),
        },
    },
}

_LEGACY_TOP_NAMES: dict[str, None] = dict.fromkeys(LEGACY_TOP_LEVEL)

_LEGACY_POOL: dict[str, str] = {
    "Name": "name",
    "DesiredCount": "desired_count",
    "IamInstanceProfile": "instance_profile",
    "SecurityGroups": "security_groups",
    "KeyPair": "key_pair",
    "ImageID": "image_id",
    "InstanceType": "instance_type",
    "Subnets": "subnets",
}

_NO_LONGER_APPLIES = {
    "ManagementSubnet": "no longer needed (the producer's pod IP is the node IP); ignored",
}


def _is_legacy(raw: Mapping[str, Any]) -> bool:
    return any(key in LEGACY_TOP_LEVEL for key in raw)


def _lookup(table: Mapping[str, Any], key: str) -> str | None:
    """The table's spelling of ``key``; Go's JSON decoder matches field names case-insensitively."""
    if key in table:
        return key
    return next((name for name in table if name.lower() == key.lower()), None)


def _from_legacy(raw: Mapping[str, Any], source: str, out: _Collector) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = _lookup(_LEGACY_TOP_NAMES, key)
        if name == "WarmPoolConfig":
            _legacy_pools(value, key, source, data, out)
        elif name is not None:
            _legacy_entry(_LEGACY[name], value, key, source, data, out)
        elif key in Settings.model_fields:  # a new-style key alongside the legacy ones
            _put(data, (key,), value, f"{key}", source, out, register=False)
        else:
            known = ", ".join((*LEGACY_TOP_LEVEL, *Settings.model_fields))
            out.errors.append(f"{source}: {key}: unknown key in an original provider config (known: {known})")
    return data


def _legacy_entry(
    target: tuple[str, ...] | _Table | None,
    value: Any,
    label: str,
    source: str,
    data: dict[str, Any],
    out: _Collector,
) -> None:
    if target is None:
        out.warnings.append(f"{source}: {label}: {_NO_LONGER_APPLIES.get(label.split('.')[-1], 'ignored')}")
        return
    if value is None or value == "":  # Go's zero value: the key was not set
        return
    if isinstance(target, tuple):
        _put(data, target, value, label, source, out, register=True)
        return
    if not isinstance(value, dict):
        out.errors.append(f"{source}: {label}: expected an object, got {_kind(value)}")
        return
    for key, item in value.items():
        name = _lookup(target, str(key))
        if name is None:
            known = ", ".join(target)
            out.errors.append(f"{source}: {label}.{key}: unknown key (known: {known})")
            continue
        _legacy_entry(target[name], item, f"{label}.{key}", source, data, out)


def _legacy_pools(value: Any, label: str, source: str, data: dict[str, Any], out: _Collector) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        out.errors.append(f"{source}: {label}: expected a list of pools, got {_kind(value)}")
        return
    pools: list[dict[str, Any]] = []
    out.origins[("warm_pools",)] = _Origin(source, label)
    for index, entry in enumerate(value):
        where = f"{label}[{index}]"
        pool: dict[str, Any] = {"name": f"pool-{index}"}
        out.origins[("warm_pools", index)] = _Origin(source, where)
        out.origins[("warm_pools", index, "name")] = _Origin(source, f"{where} (default name pool-{index})")
        if not isinstance(entry, dict):
            out.errors.append(f"{source}: {where}: expected an object, got {_kind(entry)}")
            continue
        for key, item in entry.items():
            name = _lookup(_LEGACY_POOL, str(key))
            if name is None:
                known = ", ".join(_LEGACY_POOL)
                out.errors.append(f"{source}: {where}.{key}: unknown key (known: {known})")
                continue
            if item is None or item == "":
                continue
            pool[_LEGACY_POOL[name]] = item
            out.origins[("warm_pools", index, _LEGACY_POOL[name])] = _Origin(source, f"{where}.{key}")
        pools.append(pool)
    data["warm_pools"] = pools


def _put(
    data: dict[str, Any],
    path: tuple[str, ...],
    value: Any,
    label: str,
    source: str,
    out: _Collector,
    *,
    register: bool,
) -> None:
    """Set ``path`` in ``data``, merging mappings; two different values for one key are an error."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            out.errors.append(f"{source}: {label}: conflicts with {'.'.join(path[:-1])} set elsewhere")
            return
        node = child
    last = path[-1]
    if last in node and isinstance(node[last], dict) and isinstance(value, dict):
        for key, item in value.items():
            _put(data, (*path, str(key)), item, f"{label}.{key}", source, out, register=register)
        return
    if last in node and node[last] != value:
        other = out.origins.get(path)
        where = other.label if other else _render(path)
        out.errors.append(
            f"{source}: {label}: conflicts with {where} ({value!r} vs {node[last]!r}); set only one"
        )
        return
    node[last] = value
    if register:
        out.origins[path] = _Origin(source, label)


# --- environment overrides ---------------------------------------------------------------------

_UNKNOWN: Any = object()


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _type_at(path: Sequence[str | int]) -> Any:
    """The annotation of the key at ``path`` in :class:`Settings`, or ``_UNKNOWN``."""
    tp: Any = Settings
    for part in path:
        tp = _strip_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return _UNKNOWN
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return _UNKNOWN
    return tp


def _is_structured(tp: Any) -> bool:
    bare = _strip_optional(tp)
    return get_origin(bare) in (list, dict) or (isinstance(bare, type) and issubclass(bare, BaseModel))


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], out: _Collector) -> None:
    fields = list(Settings.model_fields)
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        raw_value = environ[var]
        parts: list[str] = var[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in Settings.model_fields:
            # Other tools share the prefix (VKEC2_KUBETOOLS_CACHE ...): ignore, but flag near misses.
            close = difflib.get_close_matches(parts[0], fields, n=1, cutoff=0.85)
            if close:
                out.warnings.append(
                    f"env {var}: ignored: {parts[0]!r} is not a setting (did you mean "
                    f"{ENV_PREFIX}{close[0].upper()}?)"
                )
            continue
        source = f"env {var}"
        path: list[str | int] = []
        for part in parts:
            parent = _strip_optional(_type_at(path))
            path.append(int(part) if get_origin(parent) is list and part.isdigit() else part)
        tp = _type_at(path)
        value: Any = raw_value
        if tp is not _UNKNOWN and _is_optional(tp) and raw_value == "":
            value = None
        elif tp is not _UNKNOWN and _is_structured(tp):
            try:
                value = json.loads(raw_value)
            except (ValueError, RecursionError) as exc:
                out.errors.append(f"{source}: {_render(path)}: not valid JSON ({exc})")
                continue
        if _set_env(data, path, value, source, out):
            key = tuple(path)
            for known in [p for p in out.origins if p[: len(key)] == key]:
                del out.origins[known]
            out.origins[key] = _Origin(source, _render(path))


def _set_env(
    data: dict[str, Any], path: Sequence[str | int], value: Any, source: str, out: _Collector
) -> bool:
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                out.errors.append(
                    f"{source}: {_render(path)}: index {part} out of range ({size} entries configured)"
                )
                return False
            node = node[part]
            continue
        if not isinstance(node, dict):
            out.errors.append(f"{source}: {_render(path)}: {_render(path[:depth])} is not a mapping")
            return False
        if not isinstance(node.get(part), dict | list):
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            size = len(node) if isinstance(node, list) else 0
            out.errors.append(
                f"{source}: {_render(path)}: index {last} out of range ({size} entries configured)"
            )
            return False
        node[last] = value
        return True
    if not isinstance(node, dict):
        out.errors.append(f"{source}: {_render(path)}: {_render(path[:-1])} is not a mapping")
        return False
    node[last] = value
    return True


# --- error messages ----------------------------------------------------------------------------


def _render(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(exc: ValidationError, source: str | None, origins: Mapping[_KeyPath, _Origin]) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc: _KeyPath = tuple(error["loc"])
        origin: _Origin | None = None
        cut = 0
        for cut in range(len(loc), -1, -1):
            origin = origins.get(loc[:cut])
            if origin is not None:
                break
        if origin is None:
            where = f"{source or 'configuration'}: {_render(loc) or '(top level)'}"
        else:
            rest = _render(loc[cut:])
            sep = "" if not rest or rest.startswith("[") else "."
            where = f"{origin.source}: {origin.label}{sep}{rest}"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parent = _strip_optional(_type_at(loc[:-1]))
            if isinstance(parent, type) and issubclass(parent, BaseModel):
                message = f"unknown key (known: {', '.join(parent.model_fields)})"
            else:
                message = "unknown key"
        elif error["type"] != "missing" and not isinstance(error["input"], dict | list):
            shown = _show(error["input"])
            if error["type"] != "value_error" or shown not in message:
                message += f" (got {shown})"
        lines.append(f"{where}: {message}")
    return lines
