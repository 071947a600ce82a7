"""Fleet configuration: one validated model for the producer, workers, beat and the CLI.

Settings come from one YAML or JSON file plus ``VKEC2_*`` environment overrides (nested keys
joined with ``__``, e.g. ``VKEC2_AGENT__PORT=8300``; lists and mappings as JSON), the environment
winning over the file. The original Go provider's ``config.json`` (``ClusterName``, ``VMConfig``,
``WarmPoolConfig`` ...) is recognised by its PascalCase keys and mapped onto this model so existing
users can switch unchanged. A bad value stops start-up with a :class:`InvalidConfig` (a
:class:`~vkec2.errors.ConfigError`) that lists every error by key path and by file or environment
variable; warnings go to the ``vkec2.config`` logger and are returned by :func:`load_config`. The
package: :mod:`~vkec2.config.model`, :mod:`~vkec2.config.launch` and :mod:`~vkec2.config.operations` (the
settings and their sections), :mod:`~vkec2.config.shapes` (value rules shared with the pod annotations),
:mod:`~vkec2.config.loading` (file and environment), :mod:`~vkec2.config.legacy` (the original
provider's file), :mod:`~vkec2.config.transport` (plaintext agents refused outside loopback unless
named) and :mod:`~vkec2.config.errors` (error lines). The reference for every key is
``docs/configuration.md``.
"""

from vkec2.config.errors import InvalidConfig
from vkec2.config.launch import Ec2Defaults, WarmPool
from vkec2.config.legacy import LEGACY_TOP_LEVEL
from vkec2.config.loading import LoadedConfig, load_config, load_settings
from vkec2.config.model import (
    CONFIG_ENV,
    ENV_PREFIX,
    AgentConnection,
    AgentTls,
    AwsSettings,
    Backoff,
    BootstrapAgent,
    CelerySettings,
    Keepalive,
    NodeSettings,
    Settings,
)
from vkec2.config.operations import (
    BeatSettings,
    FlowerSettings,
    GcSettings,
    HealthSettings,
    LoggingSettings,
    MetricsSettings,
    QuotaSettings,
    RateLimitSettings,
    TokenBucket,
    TracingSettings,
)
from vkec2.config.shapes import (
    IMAGE_ID_RE,
    INSTANCE_TYPE_RE,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_USER_TAGS,
    RESERVED_TAG_PREFIXES,
    SECURITY_GROUP_ID_RE,
    SUBNET_ID_RE,
    is_instance_profile,
    is_key_pair,
    tag_problem,
    tags_problem,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "IMAGE_ID_RE",
    "INSTANCE_TYPE_RE",
    "LEGACY_TOP_LEVEL",
    "MAX_TAG_KEY",
    "MAX_TAG_VALUE",
    "MAX_USER_TAGS",
    "RESERVED_TAG_PREFIXES",
    "SECURITY_GROUP_ID_RE",
    "SUBNET_ID_RE",
    "AgentConnection",
    "AgentTls",
    "AwsSettings",
    "Backoff",
    "BeatSettings",
    "BootstrapAgent",
    "CelerySettings",
    "Ec2Defaults",
    "FlowerSettings",
    "GcSettings",
    "HealthSettings",
    "InvalidConfig",
    "Keepalive",
    "LoadedConfig",
    "LoggingSettings",
    "MetricsSettings",
    "NodeSettings",
    "QuotaSettings",
    "RateLimitSettings",
    "Settings",
    "TokenBucket",
    "TracingSettings",
    "WarmPool",
    "is_instance_profile",
    "is_key_pair",
    "load_config",
    "load_settings",
    "tag_problem",
    "tags_problem",
]
