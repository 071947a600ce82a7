"""Configuration loading: files (new format and the original provider's config.json), ``VKEC2_*``
environment overrides, validation with every error named by key path and source, and the
``vkec2 config check`` command run as a real subprocess."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vkec2.config import InvalidConfig, LoadedConfig, Settings, load_config, load_settings
from vkec2.errors import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data"
LEGACY = DATA / "original-provider-config.json"
EXAMPLE = DATA / "vkec2.yaml"
INVALID = DATA / "invalid.yaml"
ROOT = Path(__file__).resolve().parents[2]
TLS_ENV = {"VKEC2_AGENT__TLS": json.dumps({"ca_cert_file": "/etc/vkec2/ca/ca.crt"})}
WITH_TLS = Settings.model_validate({"agent": {"tls": {"ca_cert_file": "/etc/vkec2/ca/ca.crt"}}})


def write(tmp_path: Path, name: str, content: str | dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def errors_of(path: Path | None, env: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env=env or {})
    return info.value.errors


def legacy() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LEGACY.read_text())
    return data


# --- defaults and the new format -------------------------------------------------------------


def test_no_file_and_no_env_gives_defaults() -> None:
    assert load_settings(env=TLS_ENV) == WITH_TLS  # agent.tls is needed: test_config_transport.py


def test_capacity_defaults() -> None:
    ec2 = Settings().ec2
    assert (ec2.capacity_deadline_seconds, ec2.unavailable_ttl_seconds, ec2.instance_types) == (1800, 180, [])
    pool = Settings.model_validate({"warm_pools": [{"name": "a", "instance_types": ["c5.large"]}]})
    assert pool.pool_launch_defaults(pool.warm_pools[0]).instance_types == ["c5.large"]


def test_example_yaml_loads_every_section() -> None:
    s = load_settings(EXAMPLE, env={})
    assert s.cluster_name == "prod-east"
    assert s.region == "us-east-1"
    assert s.aws.endpoint_url == "http://127.0.0.1:5000"
    assert s.ec2.subnets == ["subnet-0aaa", "subnet-0bbb"]
    assert s.ec2.tags == {"team": "build"}
    assert [p.name for p in s.warm_pools] == ["mac-small", "linux"]
    assert s.default_warm_pool == "linux"
    assert s.agent.port == 8300
    assert s.agent.static_endpoint() == ("127.0.0.1", 18200)
    assert s.agent.backoff.base_delay_seconds == 0.5
    assert s.node.os == "darwin"


def test_json_file_and_json_content_in_a_yaml_file(tmp_path: Path) -> None:
    content = {"cluster_name": "c1", "agent": {"port": 9000}}
    assert load_settings(write(tmp_path, "c.json", content), env=TLS_ENV).agent.port == 9000
    assert load_settings(write(tmp_path, "c.yaml", content), env=TLS_ENV).cluster_name == "c1"


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "empty.yaml", ""), env=TLS_ENV) == WITH_TLS


def test_config_path_from_vkec2_config(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "cluster_name: from-env-path\n")
    loaded = load_config(env={"VKEC2_CONFIG": str(path), **TLS_ENV})
    assert loaded.settings.cluster_name == "from-env-path"
    assert loaded.path == str(path)


# --- environment overrides -------------------------------------------------------------------


def test_env_overrides_win_over_the_file() -> None:
    env = {
        "VKEC2_AGENT__PORT": "8400",
        "VKEC2_REDIS_URL": "redis://other:6379/3",
        "VKEC2_AWS__ENDPOINT_URL": "http://127.0.0.1:5555",
        "VKEC2_EC2__SUBNETS": '["subnet-0ddd"]',
        "VKEC2_EC2__TAGS": '{"Team": "ops"}',
        "VKEC2_WARM_POOLS__1__DESIRED_COUNT": "9",
        "VKEC2_AGENT__BACKOFF__MULTIPLIER": "2",
    }
    s = load_settings(EXAMPLE, env=env)
    assert s.agent.port == 8400
    assert s.redis_url == "redis://other:6379/3"
    assert s.aws.endpoint_url == "http://127.0.0.1:5555"
    assert s.ec2.subnets == ["subnet-0ddd"]
    assert s.ec2.tags == {"Team": "ops"}
    assert s.warm_pools[1].desired_count == 9
    assert s.warm_pools[0].desired_count == 2
    assert s.agent.backoff.multiplier == 2
    assert s.agent.backoff.base_delay_seconds == 0.5  # siblings from the file survive


def test_env_whole_list_as_json_and_empty_optional_is_null() -> None:
    env = {
        "VKEC2_WARM_POOLS": '[{"name": "only"}]',
        "VKEC2_DEFAULT_WARM_POOL": "only",
        "VKEC2_AWS__ENDPOINT_URL": "",
    }
    s = load_settings(EXAMPLE, env=env)
    assert [p.name for p in s.warm_pools] == ["only"]
    assert s.aws.endpoint_url is None


def test_env_errors_name_the_variable() -> None:
    errors = errors_of(
        None, {"VKEC2_AGENT__PORT": "abc", "VKEC2_EC2__SUBNETS": "[oops", "VKEC2_AGENT__PROT": "1"}
    )
    assert any(
        e.startswith("env VKEC2_AGENT__PORT: agent.port: Input should be a valid integer")
        and "(got 'abc')" in e
        for e in errors
    )
    assert any(e.startswith("env VKEC2_EC2__SUBNETS: ec2.subnets: not valid JSON") for e in errors)
    assert any(e.startswith("env VKEC2_AGENT__PROT: agent.prot: unknown key") for e in errors)
    assert len(errors) == 3


def test_env_index_out_of_range_is_an_error() -> None:
    (error,) = errors_of(EXAMPLE, {"VKEC2_WARM_POOLS__7__DESIRED_COUNT": "1"})
    assert "VKEC2_WARM_POOLS__7__DESIRED_COUNT" in error and "out of range" in error


def test_unrelated_vkec2_variables_are_ignored_and_near_misses_warned() -> None:
    loaded = load_config(env={"VKEC2_KUBETOOLS_CACHE": "/tmp/x", "VKEC2_REDIS_UR": "redis://x", **TLS_ENV})
    assert loaded.settings == WITH_TLS
    assert len(loaded.warnings) == 1
    assert "VKEC2_REDIS_UR" in loaded.warnings[0] and "VKEC2_REDIS_URL" in loaded.warnings[0]


@given(st.integers(min_value=-100_000, max_value=100_000))
def test_env_port_accepted_exactly_in_range(port: int) -> None:
    env = {"VKEC2_AGENT__PORT": str(port), **TLS_ENV}
    if 1 <= port <= 65535:
        assert load_settings(env=env).agent.port == port
    else:
        with pytest.raises(ConfigError, match=r"env VKEC2_AGENT__PORT: agent\.port: "):
            load_settings(env=env)


# --- validation and error reporting ----------------------------------------------------------


def test_every_error_is_listed_with_file_and_key_path() -> None:
    errors = errors_of(INVALID)
    src = str(INVALID)
    assert (
        f"{src}: agent.port: Input should be a valid integer, unable to parse string as an integer "
        "(got 'abc')" in errors
    )
    assert f"{src}: health.interval_seconds: Input should be greater than 0 (got 0)" in errors
    assert f"{src}: default_warm_pool: no warm pool named 'pool-b' (configured: pool-a)" in errors
    assert len(errors) == 3


def test_the_exception_is_a_config_error_whose_message_has_every_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(INVALID, env={})
    assert info.value.reason == "InvalidConfiguration"
    assert str(info.value).count(str(INVALID)) == 3


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "agent:\n  prot: 1\nclustername: x\n")
    errors = errors_of(path)
    assert any(e.startswith(f"{path}: agent.prot: unknown key (known: port, endpoint") for e in errors)
    assert any(e.startswith(f"{path}: clustername: unknown key") for e in errors)


@pytest.mark.parametrize(
    "endpoint",
    [
        "private-ip",
        "public-ip",
        "static:127.0.0.1:8200",
        "static:[::1]:1",
        "static:agent.local:65535",
    ],
)
def test_valid_agent_endpoints(endpoint: str) -> None:
    assert load_settings(env={"VKEC2_AGENT__ENDPOINT": endpoint, **TLS_ENV}).agent.endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "static:h:0",
        "static:h:65536",
        "static:h:x",
        "static::80",
        "static:h",
        "static:bad host:80",
        "private",
        "dns",
    ],
)
def test_invalid_agent_endpoints(endpoint: str) -> None:
    (error,) = errors_of(None, {"VKEC2_AGENT__ENDPOINT": endpoint})
    assert error.startswith("env VKEC2_AGENT__ENDPOINT: agent.endpoint: ")


def test_static_endpoint_parsing() -> None:
    s = load_settings(env={"VKEC2_AGENT__ENDPOINT": "static:[::1]:9000"})
    assert s.agent.static_endpoint() == ("::1", 9000)
    assert Settings().agent.static_endpoint() is None


def test_pool_names_must_be_dns_labels_and_unique(tmp_path: Path) -> None:
    (error,) = errors_of(write(tmp_path, "a.yaml", {"warm_pools": [{"name": "Mac_Pool"}]}))
    assert "warm_pools[0].name: pool name 'Mac_Pool' is not a DNS label" in error
    (error,) = errors_of(write(tmp_path, "b.yaml", {"warm_pools": [{"name": "a"}, {"name": "a"}]}))
    assert "warm_pools: duplicate pool name 'a'" in error


def test_default_pool_is_named_or_first() -> None:
    pools = [{"name": "a"}, {"name": "b"}]
    first = Settings.model_validate({"warm_pools": pools})
    assert first.default_pool() is not None and first.default_pool().name == "a"  # type: ignore[union-attr]
    named = Settings.model_validate({"warm_pools": pools, "default_warm_pool": "b"})
    assert named.default_pool() is not None and named.default_pool().name == "b"  # type: ignore[union-attr]
    assert Settings().default_pool() is None
    (error,) = errors_of(None, {"VKEC2_DEFAULT_WARM_POOL": "a"})
    assert "no warm pool named 'a' (configured: none)" in error


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VKEC2_STATUS_INTERVAL_SECONDS", "0"),
        ("VKEC2_HEALTH__INTERVAL_SECONDS", "-1"),
        ("VKEC2_AGENT__CALL_TIMEOUT_SECONDS", "0"),
        ("VKEC2_AGENT__KEEPALIVE__TIME_SECONDS", "0"),
        ("VKEC2_CELERY__MAX_COUNTDOWN_SECONDS", "900"),  # not below the visibility timeout
        ("VKEC2_AGENT__BACKOFF__MAX_DELAY_SECONDS", "0.5"),  # below the base delay
        ("VKEC2_EC2__IMAGE_ID", "centos"),
        ("VKEC2_EC2__INSTANCE_TYPE", "large"),
        ("VKEC2_EC2__INSTANCE_TYPES", '["m5.large", "large"]'),
        ("VKEC2_EC2__INSTANCE_TYPES", '["m5.large", "m5.large"]'),
        ("VKEC2_EC2__CAPACITY_DEADLINE_SECONDS", "0"),
        ("VKEC2_EC2__UNAVAILABLE_TTL_SECONDS", "-1"),
        ("VKEC2_EC2__SECURITY_GROUPS", '["default"]'),
        ("VKEC2_EC2__TAGS", '{"vkec2.io/pod-uid": "x"}'),
        ("VKEC2_REGION", "mars"),
        ("VKEC2_REDIS_URL", "http://localhost"),
        ("VKEC2_AGENT__TLS", '{"ca_cert_file": "ca.pem", "client_cert_file": "c.pem"}'),
    ],
)
def test_bad_values_are_refused(variable: str, value: str) -> None:
    (error,) = errors_of(None, {variable: value})
    assert error.startswith(f"env {variable}: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("agent: [1,\n", "c.yaml:2:1: invalid YAML"),
        ("a: 1\na: 2\n", "c.yaml:2:1: invalid YAML: key 'a' appears twice"),
        ("- 1\n- 2\n", "c.yaml: the top level must be a mapping, not a list"),
    ],
)
def test_unparseable_files(tmp_path: Path, content: str, expected: str) -> None:
    (error,) = errors_of(write(tmp_path, "c.yaml", content))
    assert error.startswith(str(tmp_path / expected))


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    (error,) = errors_of(write(tmp_path, "c.json", '{\n  "a": 1,\n}'))
    assert error.startswith(f"{tmp_path / 'c.json'}:3:1: invalid JSON")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path / "nope.yaml")
    assert error == f"{tmp_path / 'nope.yaml'}: cannot read the configuration file: No such file or directory"


# --- the original provider's config.json -----------------------------------------------------


def test_original_provider_config_loads_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vkec2.config"):
        loaded = load_config(LEGACY, env=TLS_ENV)
    s = loaded.settings
    assert (s.cluster_name, s.region) == ("my-eks-cluster", "us-west-2")
    assert (s.aws.read_timeout_seconds, s.aws.connect_timeout_seconds) == (10, 2)
    assert (s.ec2.image_id, s.ec2.user_data) == ("ami-abcd123", None)  # InitData never replaces the installer
    assert s.bootstrap.model_dump() == {
        "s3_bucket": "vk-bootstrap-agent",
        "s3_key": "bootstrap_agent",
        "init_data": "base64encoded",
    }
    assert s.agent.port == 8200
    health = s.health
    assert (health.unhealthy_threshold, health.unknown_threshold, health.interval_seconds) == (3, 20, 10)
    assert (s.agent.call_timeout_seconds, s.agent.connect_timeout_seconds) == (10, 1)
    assert s.agent.backoff.model_dump() == {
        "base_delay_seconds": 1,
        "multiplier": 1.5,
        "jitter": 0.5,
        "max_delay_seconds": 300,
    }
    assert (s.agent.keepalive.time_seconds, s.agent.keepalive.timeout_seconds) == (10, 30)
    (pool,) = s.warm_pools
    assert pool.model_dump(exclude_none=True, exclude={"capacity_type", "host_pool"}) == {
        "name": "pool-0",
        "desired_count": 2,
        "instance_type": "m5.large",
        "instance_types": [],
        "image_id": "ami-abc123",
        "subnets": ["subnet-abc123"],
        "security_groups": ["sg-abc123"],
        "instance_profile": "vk-instance-profile",
        "key_pair": "myEC2SSHKey",
    }
    assert s.default_pool() == pool
    subnet, vm_init, agent_init, pypi = loaded.warnings  # pypi: no agent.artifact
    assert subnet.startswith(f"{LEGACY}: ManagementSubnet: ignored: no longer needed")
    assert vm_init.startswith(f"{LEGACY}: VMConfig.InitData: ignored: never used as user data")
    assert agent_init.startswith(f"{LEGACY}: BootstrapAgent.InitData: kept as bootstrap.init_data")
    assert "PyPI" in pypi
    assert [r.getMessage() for r in caplog.records if r.name == "vkec2.config"] == list(loaded.warnings)


def test_legacy_status_interval_pool_names_and_new_keys_alongside(tmp_path: Path) -> None:
    data = legacy()
    data["StatusIntervalSeconds"] = 42
    data["WarmPoolConfig"].append({"Name": "mac", "DesiredCount": 1, "KeyPair": ""})
    data["redis_url"] = "redis://r:6379/2"
    s = load_settings(write(tmp_path, "config.json", data), env=TLS_ENV)
    assert s.status_interval_seconds == 42
    assert [p.name for p in s.warm_pools] == ["pool-0", "mac"]
    assert s.warm_pools[1].key_pair is None  # Go's empty string means "not set"
    assert s.redis_url == "redis://r:6379/2"


def test_legacy_errors_name_the_legacy_key(tmp_path: Path) -> None:
    data = legacy()
    data["WarmPoolConfig"][0]["DesiredCount"] = "many"
    data["WarmPoolConfig"][0]["Color"] = "blue"
    data["HealthConfig"]["HealthCheckIntervalSeconds"] = 0
    data["VMConfig"]["DefaultAMI"] = "ubuntu"
    data["Frobnicate"] = True
    path = write(tmp_path, "config.json", data)
    errors = errors_of(path)
    assert (
        f"{path}: WarmPoolConfig[0].DesiredCount: Input should be a valid integer, unable to parse "
        "string as an integer (got 'many')" in errors
    )
    assert any(e.startswith(f"{path}: WarmPoolConfig[0].Color: unknown key") for e in errors)
    assert (
        f"{path}: HealthConfig.HealthCheckIntervalSeconds: Input should be greater than 0 (got 0)" in errors
    )
    assert any(e.startswith(f"{path}: VMConfig.DefaultAMI: not an AMI ID") for e in errors)
    assert any(e.startswith(f"{path}: Frobnicate: unknown key in an original provider") for e in errors)
    assert len(errors) == 5


def test_legacy_conflicting_values_are_an_error(tmp_path: Path) -> None:
    data = legacy()
    data["VMConfig"]["defaultami"] = "ami-0other"  # Go's case folding makes this DefaultAMI too
    (error,) = errors_of(write(tmp_path, "config.json", data), TLS_ENV)
    assert "VMConfig.defaultami: conflicts with VMConfig.DefaultAMI" in error


def test_env_overrides_apply_to_a_legacy_file() -> None:
    env = {"VKEC2_AGENT__PORT": "8300", "VKEC2_WARM_POOLS__0__DESIRED_COUNT": "7", **TLS_ENV}
    s = load_settings(LEGACY, env=env)
    assert (s.agent.port, s.warm_pools[0].desired_count) == (8300, 7)
    (error,) = errors_of(LEGACY, {"VKEC2_WARM_POOLS__0__DESIRED_COUNT": "x"})
    assert error.startswith("env VKEC2_WARM_POOLS__0__DESIRED_COUNT: warm_pools[0].desired_count: ")


def test_loaded_config_is_immutable() -> None:
    loaded = load_config(EXAMPLE, env={})
    assert isinstance(loaded, LoadedConfig)
    with pytest.raises(ValueError, match="frozen"):
        loaded.settings.agent.port = 1


# --- vkec2 config check, as a real process -------------------------------------------------


MODULE = (sys.executable, "-m", "vkec2.cli")


def run_check(
    *args: str, env: dict[str, str] | None = None, command: tuple[str, ...] = MODULE
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    clean.update(env or {})
    return subprocess.run(
        [*command, "config", *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_check_prints_the_effective_yaml() -> None:
    result = run_check("check", str(EXAMPLE), env={"VKEC2_AGENT__PORT": "8500"})
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["agent"]["port"] == 8500
    assert printed["redis_url"] == "redis://:***@redis.internal:6379/0"  # password masked
    assert printed["warm_pools"][0]["name"] == "mac-small"
    assert result.stderr.count("runs only on a Dedicated Host") == 2  # the example's Macs: no host pool


def test_check_json_output_and_legacy_warning() -> None:
    result = run_check("check", str(LEGACY), "-o", "json", env=TLS_ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ec2"]["image_id"] == "ami-abcd123"
    assert result.stderr.splitlines()[0] == (
        f"warning: {LEGACY}: ManagementSubnet: ignored: no longer needed (the producer's pod IP is the "
        "node IP)"
    )
    assert len(result.stderr.splitlines()) == 4  # and the two InitData keys, and no agent.artifact


def test_check_reports_every_error_and_exits_1() -> None:
    result = run_check("check", str(INVALID))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert (
        f"error: {INVALID}: agent.port: Input should be a valid integer, unable to parse string as an "
        "integer (got 'abc')" in lines
    )
    assert any(line.startswith(f"error: {INVALID}: health.interval_seconds: ") for line in lines)
    assert any(line.startswith(f"error: {INVALID}: default_warm_pool: ") for line in lines)
    assert lines[-1] == f"{INVALID}: 3 errors"


def test_check_names_environment_variables_and_no_env_ignores_them() -> None:
    result = run_check("check", str(EXAMPLE), env={"VKEC2_AGENT__PORT": "abc"})
    assert result.returncode == 1
    assert "error: env VKEC2_AGENT__PORT: agent.port: " in result.stderr
    assert run_check("check", "--no-env", str(EXAMPLE), env={"VKEC2_AGENT__PORT": "abc"}).returncode == 0


def test_check_legacy_errors_name_legacy_keys(tmp_path: Path) -> None:
    data = legacy()
    data["WarmPoolConfig"][0]["DesiredCount"] = -3
    path = write(tmp_path, "config.json", data)
    result = run_check("check", str(path))
    assert result.returncode == 1
    expected = f"error: {path}: WarmPoolConfig[0].DesiredCount: Input should be greater than or equal to 0"
    assert f"{expected} (got -3)" in result.stderr.splitlines()


def test_check_missing_file_exits_1(tmp_path: Path) -> None:
    result = run_check("check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert f"{tmp_path / 'absent.yaml'}: cannot read the configuration file" in result.stderr


@pytest.mark.parametrize("args", [(), ("check",), ("check", "x.yaml", "-o", "toml"), ("lint", "x.yaml")])
def test_check_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run_check(*args)
    assert result.returncode == 2
    assert "usage: vkec2 config" in result.stderr


def test_console_script() -> None:
    script = shutil.which("vkec2")
    if script is None:
        pytest.skip("the vkec2 console script is not installed")
    assert run_check("check", str(LEGACY), command=(script,), env=TLS_ENV).returncode == 0
    assert run_check("check", str(INVALID), command=(script,)).returncode == 1
