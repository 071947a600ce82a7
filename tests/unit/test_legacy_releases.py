"""The original provider's config.json of each release shape, and ``vkec2 migrate``.

The fixtures under ``tests/data/legacy/`` carry every key of the original's ``ProviderConfig`` at
tag v0.5.2+opensource, at main e2f41a0 (with the example-only ``HttpClientTimeoutSeconds``) and at
tag v0.5.3; :data:`RELEASE_KEYS` lists those keys again, taken from the Go structs, so a key the
mapping table loses is caught here rather than by a user's refused file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from vkec2.cli.migrate import migrate
from vkec2.config import InvalidConfig, Settings, load_config
from vkec2.domain.podspec import user_data_for

DATA = Path(__file__).resolve().parents[1] / "data" / "legacy"
V052, MAIN, V053 = DATA / "v0.5.2+opensource.json", DATA / "main-e2f41a0.json", DATA / "v0.5.3.json"
TLS_ENV = {"VKEC2_AGENT__TLS": json.dumps({"ca_cert_file": "/etc/vkec2/ca/ca.crt"})}

_VKVMA = [
    "TimeoutSeconds", "MinConnectTimeoutSeconds", "HealthCheckIntervalSeconds", "Backoff.BaseDelaySeconds",
    "Backoff.Multiplier", "Backoff.Jitter", "Backoff.MaxDelaySeconds", "Keepalive.TimeSeconds",
    "Keepalive.TimeoutSeconds",
]  # fmt: skip
_COMMON = [
    "Region", "ClusterName", "ManagementSubnet", "VMConfig.DefaultAMI", "VMConfig.InitData",
    "BootstrapAgent.S3Bucket", "BootstrapAgent.S3Key", "BootstrapAgent.GRPCPort", "BootstrapAgent.InitData",
    "HealthConfig.UnhealthyThresholdCount", "HealthConfig.HealthCheckIntervalSeconds",
    *(f"VKVMAgentConnectionConfig.{key}" for key in _VKVMA),
]  # fmt: skip
#: Every key path of the original's config struct per release shape (WarmPoolConfig entries aside).
RELEASE_KEYS = {
    V052: {*_COMMON, "NodeName", "HealthConfig.UnhealthyMaxCount"},
    MAIN: {
        *_COMMON, "HealthConfig.UnhealthyMaxCount", "VKVMAgentConnectionConfig.Port",
        "AWSClientTimeoutSeconds", "AWSClientDialerTimeoutSeconds", "HttpClientTimeoutSeconds",
    },
    V053: {
        *_COMMON, "VKVMAgentConnectionConfig.Port", "AWSClientTimeoutSeconds",
        "AWSClientDialerTimeoutSeconds", "StatusIntervalSeconds", "HealthConfig.StreamRetryIntervalSeconds",
        "VKVMAgentConnectionConfig.KeepaliveEnabled",
    },
}  # fmt: skip
#: The keys with no meaning in vkec2: accepted with a warning that names them.
IGNORED = {
    "ManagementSubnet", "NodeName", "HttpClientTimeoutSeconds", "VMConfig.InitData",
    "HealthConfig.StreamRetryIntervalSeconds", "VKVMAgentConnectionConfig.HealthCheckIntervalSeconds",
    "VKVMAgentConnectionConfig.KeepaliveEnabled",
}  # fmt: skip


def paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted key paths of a legacy file's objects (lists are not descended)."""
    found: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= paths(value, f"{path}.")
        elif key != "WarmPoolConfig":
            found.add(path)
    return found


@pytest.mark.parametrize("fixture", [V052, MAIN, V053], ids=lambda p: p.stem)
def test_each_release_shape_loads_with_warnings_never_errors(fixture: Path) -> None:
    assert paths(json.loads(fixture.read_text())) == RELEASE_KEYS[fixture]  # the fixture is complete
    loaded = load_config(fixture, env=TLS_ENV)
    for key in IGNORED & RELEASE_KEYS[fixture]:
        assert any(w.startswith(f"{fixture}: {key}: ignored: ") for w in loaded.warnings), key
    assert loaded.settings.ec2.user_data is None


def test_v052_maps_every_meaningful_key() -> None:
    s = load_config(V052, env=TLS_ENV).settings
    assert (s.region, s.cluster_name, s.ec2.image_id) == ("us-east-1", "legacy-052", "ami-0a0b0c0d0e0f00052")
    assert (s.bootstrap.s3_bucket, s.bootstrap.s3_key) == ("bootstrap-052", "vkvmagent-0.5.2")
    assert s.bootstrap.init_data == "eyJib290c3RyYXAiOiAxfQ=="
    assert s.agent.port == 8200  # from BootstrapAgent.GRPCPort: v0.5.2 had no agent Port
    h = s.health
    assert (h.unhealthy_threshold, h.unknown_threshold, h.interval_seconds) == (4, 25, 30)  # not VKVMA's 45
    assert (s.agent.call_timeout_seconds, s.agent.connect_timeout_seconds) == (12, 3)
    assert s.agent.backoff.model_dump() == {
        "base_delay_seconds": 2,
        "multiplier": 1.7,
        "jitter": 0.3,
        "max_delay_seconds": 90,
    }
    assert (s.agent.keepalive.time_seconds, s.agent.keepalive.timeout_seconds) == (15, 25)
    assert s.node.name is None  # NodeName was never read by the original
    (pool,) = s.warm_pools
    assert (pool.name, pool.desired_count, pool.security_groups) == (
        "pool-0",
        2,
        ["sg-0a052"],
    )  # "2", "Securitygroups"
    assert (pool.instance_profile, pool.key_pair, pool.image_id) == (
        "vk-pool-052",
        "pool-key-052",
        "ami-0a0b0c0d0e0f10052",
    )
    assert (pool.instance_type, pool.subnets) == ("c5.large", ["subnet-0b052"])


def test_main_shape_maps_aws_timeouts_and_zero_values() -> None:
    s = load_config(MAIN, env=TLS_ENV).settings
    assert (s.aws.read_timeout_seconds, s.aws.connect_timeout_seconds) == (20, 4)
    assert s.celery.lock_max_hold_seconds == 600  # the default still covers these timeouts
    assert s.bootstrap.init_data is None  # "" is Go's zero value
    assert [(p.name, p.desired_count, p.key_pair) for p in s.warm_pools] == [
        ("pool-0", 1, None),
        ("pool-1", 3, None),
    ]


def test_v053_maps_port_status_interval_and_raises_the_lock_hold() -> None:
    loaded = load_config(V053, env=TLS_ENV)
    s = loaded.settings
    assert (s.status_interval_seconds, s.agent.port) == (15, 8300)  # Port wins over GRPCPort
    assert (
        f"{V053}: BootstrapAgent.GRPCPort: ignored: VKVMAgentConnectionConfig.Port sets agent.port (8300)"
        in loaded.warnings
    )
    assert (s.aws.read_timeout_seconds, s.aws.connect_timeout_seconds) == (30, 5)
    worst = 4 * s.ec2_call_worst_seconds()
    assert s.celery.lock_max_hold_seconds == worst > 600  # v0.5.3's own AWS defaults need more than 600 s
    assert (s.agent.keepalive.time_seconds, s.agent.keepalive.timeout_seconds) == (60, 120)
    assert (s.health.unhealthy_threshold, s.health.interval_seconds) == (5, 60)


def test_init_data_never_replaces_the_agent_installer() -> None:
    s = load_config(V053, env=TLS_ENV).settings
    script = user_data_for(s, "m5.large")
    assert script is not None
    assert "bootstrap-053" in script and "vkvmagent-0.5.3" in script and "8300" in script
    assert "eyJ2bSI6ICJpbml0In0=" not in script and "eyJib290c3RyYXAiOiAxfQ==" not in script


def test_keys_match_case_insensitively_and_typos_are_errors(tmp_path: Path) -> None:
    data = {"ClusterName": "c", "vkvmagentconnectionconfig": {"keepaliveENABLED": True, "port": 8201}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    loaded = load_config(path, env=TLS_ENV)
    assert (loaded.settings.cluster_name, loaded.settings.agent.port) == ("c", 8201)
    assert any("vkvmagentconnectionconfig.keepaliveENABLED: ignored" in w for w in loaded.warnings)
    data["VKVMAgentConnectionConfig"] = {"Keepalive": {"TimeSeconds": 2}}
    path.write_text(json.dumps(data))
    loaded = load_config(path, env=TLS_ENV)
    assert loaded.settings.agent.keepalive.time_seconds == 10  # gRPC-Go's floor, as the original pinged
    assert any("Keepalive.TimeSeconds: raised from 2 to 10" in w for w in loaded.warnings)
    data["HealthConfig"] = {"StreamRetryInterval": 3}  # never in any release
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env=TLS_ENV)
    (error,) = info.value.errors
    assert error.startswith(
        f"{path}: HealthConfig.StreamRetryInterval: unknown key (no release of the original"
    )


def run_migrate(*args: str) -> Any:
    return CliRunner().invoke(migrate, list(args), catch_exceptions=False)


def test_migrate_prints_every_key_and_writes_equivalent_yaml(tmp_path: Path) -> None:
    for fixture in (V052, MAIN, V053):
        out = tmp_path / f"{fixture.stem}.yaml"
        result = run_migrate("--config", str(fixture), "--output", str(out))
        assert result.exit_code == 0, result.output
        labels = {line.split(" -> ")[0] for line in result.stdout.splitlines()}
        assert RELEASE_KEYS[fixture] <= labels  # one line per key of the file
        assert (
            yaml.safe_load(out.read_text())["cluster_name"] == json.loads(fixture.read_text())["ClusterName"]
        )
        assert load_config(out, env=TLS_ENV).settings == load_config(fixture, env=TLS_ENV).settings
        assert "next: add agent.tls" in result.stderr
    lines = result.stdout.splitlines()
    assert "VKVMAgentConnectionConfig.Port -> agent.port = 8300" in lines
    assert "HealthConfig.HealthCheckIntervalSeconds -> health.interval_seconds = 60" in lines
    assert "WarmPoolConfig[0].DesiredCount -> warm_pools[0].desired_count = 10" in lines
    assert (
        "HealthConfig.StreamRetryIntervalSeconds -> ignored: vkec2 holds no health streams: the sweep "
        "polls every agent each health.interval_seconds" in lines
    )
    assert any(line.startswith("VMConfig.InitData -> ignored: never used as user data") for line in lines)
    assert "#   VMConfig.InitData: never used as user data" in out.read_text()
    assert Settings.model_validate(yaml.safe_load(out.read_text())).celery.lock_max_hold_seconds > 600


def test_migrate_refuses_new_style_and_bad_files(tmp_path: Path) -> None:
    new = tmp_path / "vkec2.yaml"
    new.write_text("cluster_name: c\n")
    result = run_migrate("--config", str(new))
    assert result.exit_code == 1 and "not the original provider's config.json" in result.stderr
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"ClusterName": "c", "HealthConfig": {"HealthCheckIntervalSeconds": -1}}))
    result = run_migrate("--config", str(bad), "--output", str(tmp_path / "out.yaml"))
    assert result.exit_code == 1
    assert (
        f"error: {bad}: HealthConfig.HealthCheckIntervalSeconds: Input should be greater than 0"
        in result.stderr
    )
    assert not (tmp_path / "out.yaml").exists()
