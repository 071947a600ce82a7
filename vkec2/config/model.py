"""The settings model: :class:`Settings` and the sections of the fleet's core.

Field names, nesting and defaults are the contract the rest of the fleet uses; the reference for
every key is ``docs/configuration.md``. This module holds the sections for AWS access, the agent
connection, bootstrap, the virtual node and Celery; the EC2 launch defaults and warm pools live in
:mod:`vkec2.config.launch`, the Dedicated-host pools in :mod:`vkec2.config.hosts`, the maintenance
and observability sections in :mod:`vkec2.config.operations` and the value rules in
:mod:`vkec2.config.shapes`. Models only validate: reading files and the
environment is :mod:`vkec2.config.loading`, and rendering launch payloads (the agent installer
as UserData) is :mod:`vkec2.domain.podspec`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vkec2.config.agent_identity import AgentIdentityCheck
from vkec2.config.allowlist import Allowlists
from vkec2.config.artifact import AgentArtifact
from vkec2.config.citizen import KubernetesSettings
from vkec2.config.hosts import HostPool, check_host_pool_refs, check_host_pools
from vkec2.config.infra import InfraSettings
from vkec2.config.kubelet_stats import KubeletStats
from vkec2.config.launch import Ec2Defaults, WarmPool, check_root_devices
from vkec2.config.launchopts import MAC_BOOT_TIMEOUT_SECONDS, check_families, instance_family
from vkec2.config.operations import (
    BeatSettings,
    FlowerSettings,
    GcSettings,
    HealthSettings,
    LoggingSettings,
    MetricsSettings,
    QuotaSettings,
    RateLimitSettings,
    TracingSettings,
)
from vkec2.config.redis_url import check_sentinel_master, parse_redis_url
from vkec2.config.secrets import SecretsSettings
from vkec2.config.shapes import (
    DNS_SUBDOMAIN_RE,
    QUANTITY_RE,
    REGION_RE,
    Section,
    check_http_url,
    parse_static,
)
from vkec2.contract import (
    HEALTH_SWEEP,
    HOSTS,
    ORPHAN_GC,
    POD_TAGS,
    QUOTAS,
    RESUME,
    STATUS_LOG,
    WARM_POOLS,
)

#: At most this many RunInstances in one create step (the capacity fallback, vkec2.fleet.capacity).
RUN_INSTANCES_PER_STEP = 3
#: The EC2 calls one create step can make at worst: its RunInstances and one describe.
STEP_EC2_CALLS = RUN_INSTANCES_PER_STEP + 1

#: Environment variable naming the configuration file when no path is given.
CONFIG_ENV = "VKEC2_CONFIG"
#: Prefix of every environment override.
ENV_PREFIX = "VKEC2_"


class AwsSettings(Section):
    """How workers reach AWS (EC2, S3, Service Quotas)."""

    endpoint_url: str | None = Field(default=None, description="AWS endpoint override (moto, VPC endpoint).")
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    batch_window_seconds: float = Field(
        default=0.25,
        ge=0,
        le=5,
        description="How long one worker gathers the fleet's DescribeInstances polls into one call "
        "(0 turns coalescing off).",
    )
    launch_batch_window_seconds: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="How long a batch of pods with the same launch parameters gathers before one "
        "RunInstances launches them all (0 turns batched launches off: one RunInstances per pod).",
    )
    launch_batch_max: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="The most pods one batched RunInstances launches (its MaxCount).",
    )
    terminate_batch_window_seconds: float = Field(
        default=2.0,
        ge=0,
        le=10,
        description="How long one worker gathers the fleet's TerminateInstances into one call; a "
        "delete is not in a hurry (0 turns coalescing off).",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_http_url(value)


class Backoff(Section):
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


class Keepalive(Section):
    """gRPC keepalive pings towards an agent."""

    time_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=20.0, gt=0)


class AgentTls(Section):
    """Fleet CA and the client identity; absent means plaintext agents (loopback or an insecure flag)."""

    ca_cert_file: str
    ca_key_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> AgentTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file must be set together")
        return self


class AgentConnection(Section):
    """How workers and the producer reach the agent on each instance."""

    port: int = Field(default=8200, ge=1, le=65535)
    endpoint: str = "private-ip"  # private-ip | public-ip | static:HOST:PORT
    call_timeout_seconds: float = Field(default=10.0, gt=0)
    connect_timeout_seconds: float = Field(default=1.0, gt=0)
    boot_timeout_seconds: float = Field(default=900.0, gt=0)
    boot_timeouts: dict[str, float] = Field(
        default_factory=lambda: dict(MAC_BOOT_TIMEOUT_SECONDS),
        description="Instance family -> boot timeout (seconds), overriding boot_timeout_seconds.",
    )
    max_grace_seconds: float = Field(default=3600.0, ge=0)
    finished_keepalive_seconds: float = Field(default=300.0, ge=0)
    backoff: Backoff = Field(default_factory=Backoff)
    keepalive: Keepalive = Field(default_factory=Keepalive)
    tls: AgentTls | None = None
    identity: AgentIdentityCheck = Field(default_factory=AgentIdentityCheck)
    insecure_plaintext: bool = Field(
        default=False,
        description="Drive agents without TLS although they are not on loopback (vkec2.config.transport).",
    )
    artifact: AgentArtifact | None = None  # the pinned agent artifact (vkec2.config.artifact)

    _families = field_validator("boot_timeouts")(check_families)

    def boot_timeout_for(self, instance_type: str) -> float:
        """How long an instance of ``instance_type`` may boot before its agent must answer."""
        return self.boot_timeouts.get(instance_family(instance_type), self.boot_timeout_seconds)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value in {"private-ip", "public-ip"}:
            return value
        if value.startswith("static:"):
            parse_static(value)
            return value
        raise ValueError(f"must be private-ip, public-ip or static:HOST:PORT, not {value!r}")

    def static_endpoint(self) -> tuple[str, int] | None:
        """``(host, port)`` when ``endpoint`` is ``static:HOST:PORT``, else None."""
        return parse_static(self.endpoint) if self.endpoint.startswith("static:") else None


class BootstrapAgent(Section):
    """Where the agent artifact lives for the user-data installer."""

    s3_bucket: str | None = None
    s3_key: str | None = None
    init_data: str | None = None  # the original provider's BootstrapAgent.InitData: accepted, unused


class NodeSettings(Section):
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
        if value is not None and (len(value) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(value)):
            raise ValueError(f"node name {value!r} is not a DNS subdomain")
        return value

    @field_validator("cpu", "memory", "pods")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY_RE.fullmatch(value):
            raise ValueError(f"not a Kubernetes quantity like 96, 500m or 384Gi: {value!r}")
        return value


class CelerySettings(Section):
    """Broker and task behaviour; see vkec2/broker/app.py for how each value is used."""

    visibility_timeout_seconds: int = Field(default=600, ge=1)
    max_countdown_seconds: float = Field(default=30.0, gt=0)
    lock_ttl_seconds: float = Field(
        default=15.0,
        ge=3,
        description="How long a per-pod lock outlives a worker that died holding it (a live holder's "
        "lock is extended every third of it).",
    )
    lock_max_hold_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long one pod step may keep its lock alive; at least the EC2 calls of a step.",
    )
    resume_slack_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How late a pod step may start (past its due time and the pods queue's wait) "
        "before vkec2.maintenance.resume publishes it again.",
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


class Settings(BaseSettings):
    """The whole configuration of one fleet (see docs/configuration.md).

    A pydantic-settings model: its configuration names the ``VKEC2_`` prefix and the ``__``
    nesting delimiter of the environment overrides. Constructing it reads nothing but its
    arguments (``Settings()`` is all defaults); :func:`vkec2.config.load_config` adds the file and
    the environment, with every error named by its source.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=False,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=True,  # the loader lower-cases names after the prefix (vkec2.config.loading)
    )

    cluster_name: str = Field(default="vkec2", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    region: str = "us-west-2"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_sentinel_master: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    redis_wait_replicas: int = Field(default=0, ge=0)
    status_interval_seconds: float = Field(default=15.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    ec2: Ec2Defaults = Field(default_factory=Ec2Defaults)
    warm_pools: list[WarmPool] = Field(default_factory=list)
    default_warm_pool: str | None = Field(
        default=None, description="Pool used by pods that ask for none; None means the first pool."
    )
    host_pools: list[HostPool] = Field(default_factory=list)
    agent: AgentConnection = Field(default_factory=AgentConnection)
    bootstrap: BootstrapAgent = Field(default_factory=BootstrapAgent)
    health: HealthSettings = Field(default_factory=HealthSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    # The node as a Kubernetes citizen: labels, taints, DaemonSet pods, images -> AMIs (vkec2.config.citizen).
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    kubelet_stats: KubeletStats = Field(default_factory=KubeletStats)  # the kubelet API's stats fan-out
    celery: CelerySettings = Field(default_factory=CelerySettings)
    # What pods may ask for by annotation beyond the configured launch parameters (docs/security.md).
    allowlists: Allowlists = Field(default_factory=Allowlists)
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
    # Sealing keys for resolved ConfigMap/Secret content and its refresh (docs/security.md).
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    infra: InfraSettings = Field(default_factory=InfraSettings)  # vkec2 infra plan|apply|destroy

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not REGION_RE.fullmatch(value):
            raise ValueError(f"not an AWS region like us-west-2: {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        parse_redis_url(value)
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

    _host_pools = field_validator("host_pools")(check_host_pools)

    @model_validator(mode="after")
    def _host_pool_names(self) -> Settings:
        check_host_pool_refs(self.host_pools, self.ec2, self.warm_pools)
        return self

    @model_validator(mode="after")
    def _sentinel_master(self) -> Settings:
        check_sentinel_master(parse_redis_url(self.redis_url), self.redis_sentinel_master)
        return self

    @model_validator(mode="after")
    def _root_devices(self) -> Settings:
        check_root_devices(self.ec2, self.warm_pools)
        return self

    @model_validator(mode="after")
    def _hold_outlasts_a_step(self) -> Settings:
        worst = STEP_EC2_CALLS * self.ec2_call_worst_seconds()
        if self.celery.lock_max_hold_seconds < worst:
            raise ValueError(
                f"celery.lock_max_hold_seconds ({self.celery.lock_max_hold_seconds:g}) is shorter than "
                f"the worst case of one create step's EC2 calls ({worst:g}s = {STEP_EC2_CALLS} calls of "
                "aws.max_attempts x (aws.connect_timeout_seconds + aws.read_timeout_seconds) + "
                "rate_limits.max_wait_seconds each): a live step would lose its pod's lock; raise "
                "celery.lock_max_hold_seconds or lower the aws timeouts, aws.max_attempts or "
                "rate_limits.max_wait_seconds"
            )
        return self

    def beat_periods(self) -> dict[str, float]:
        """Task name -> period of every entry of the beat schedule (vkec2.broker.app builds it)."""
        return {
            HEALTH_SWEEP: self.health.interval_seconds,
            WARM_POOLS: self.beat.warm_pools_interval_seconds,
            QUOTAS: self.quotas.interval_seconds,
            STATUS_LOG: self.status_interval_seconds,
            ORPHAN_GC: self.gc.interval_seconds,
            RESUME: self.beat.resume_interval_seconds,
            HOSTS: self.beat.hosts_interval_seconds,
            POD_TAGS: self.beat.pod_tags_interval_seconds,
        }

    def beat_liveness_seconds(self) -> float:
        """How long a fleet may go without an active beat before it is reported: the setting, else
        three times the shortest period, at least 60 s."""
        if self.beat.liveness_seconds is not None:
            return self.beat.liveness_seconds
        return max(60.0, 3 * min(self.beat_periods().values()))

    def ec2_call_worst_seconds(self) -> float:
        """The longest one EC2 call of the gateway can take: every botocore attempt timing out after
        connecting and reading, plus the longest wait for a fleet rate-limit token."""
        aws = self.aws
        wait = self.rate_limits.max_wait_seconds if self.rate_limits.enabled else 0.0
        return aws.max_attempts * (aws.connect_timeout_seconds + aws.read_timeout_seconds) + wait

    def pool(self, name: str) -> WarmPool | None:
        """The warm pool called ``name``, or None."""
        return next((pool for pool in self.warm_pools if pool.name == name), None)

    def default_pool(self) -> WarmPool | None:
        """The pool used by pods that name none: ``default_warm_pool``, else the first pool."""
        if self.default_warm_pool is not None:
            return self.pool(self.default_warm_pool)
        return self.warm_pools[0] if self.warm_pools else None

    def host_pool(self, name: str) -> HostPool | None:
        """The host pool called ``name``, or None."""
        return next((pool for pool in self.host_pools if pool.name == name), None)

    def pool_launch_defaults(self, pool: WarmPool) -> Ec2Defaults:
        """The EC2 parameters a pool's instances launch with: the pool's, unset ones from ``ec2``."""
        return pool.launch_defaults(self.ec2)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the constructor's arguments: the environment is read by ``load_config`` alone."""
        return (init_settings,)


# ---------------------------------------------------------------------------------------------
# The annotation at a key path, for the loader and its error messages.
