"""``VKEC2_*`` overrides read through pydantic-settings: how variables are laid over the file, the
list-index shim, and that constructing :class:`Settings` reads nothing from the process
environment (only :func:`load_config` does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vkec2.config import InvalidConfig, Settings, load_config, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "vkec2.yaml"


def errors_of(env: dict[str, str]) -> tuple[str, ...]:
    with pytest.raises(InvalidConfig) as info:
        load_config(EXAMPLE, env=env)
    return info.value.errors


def test_settings_constructor_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VKEC2_AGENT__PORT", "1234")
    assert Settings().agent.port == 8200
    assert Settings(cluster_name="c1").cluster_name == "c1"
    assert load_settings(env=None).agent.port == 1234


def test_a_nested_variable_merges_and_a_json_variable_replaces() -> None:
    s = load_settings(EXAMPLE, env={"VKEC2_EC2__TAGS__OWNER": "me"})
    assert s.ec2.tags == {"team": "build", "owner": "me"}
    s = load_settings(EXAMPLE, env={"VKEC2_AGENT__BACKOFF": '{"multiplier": 3}'})
    assert (s.agent.backoff.multiplier, s.agent.backoff.base_delay_seconds) == (3, 1.0)


def test_deeper_variables_refine_a_json_section() -> None:
    agent = '{"port": 9001, "endpoint": "public-ip", "tls": {"ca_cert_file": "/ca.crt"}}'
    env = {"VKEC2_AGENT": agent, "VKEC2_AGENT__PORT": "9002"}
    s = load_settings(EXAMPLE, env=env)
    assert (s.agent.port, s.agent.endpoint) == (9002, "public-ip")


def test_keys_inside_json_values_are_exact() -> None:
    (error,) = errors_of({"VKEC2_AGENT": '{"PORT": 1}'})
    assert error.startswith("env VKEC2_AGENT: agent.PORT: unknown key")


def test_list_index_shim_reads_json_and_empty_values_by_type() -> None:
    env = {"VKEC2_WARM_POOLS__0__SUBNETS": '["subnet-0ddd"]', "VKEC2_WARM_POOLS__0__KEY_PAIR": ""}
    pool = load_settings(EXAMPLE, env=env).warm_pools[0]
    assert (pool.subnets, pool.key_pair) == (["subnet-0ddd"], None)
    s = load_settings(EXAMPLE, env={"VKEC2_EC2__SUBNETS__1": "subnet-0ccc"})
    assert s.ec2.subnets == ["subnet-0aaa", "subnet-0ccc"]
    (error,) = errors_of({"VKEC2_WARM_POOLS__0__SUBNETS": "[oops"})
    assert error.startswith("env VKEC2_WARM_POOLS__0__SUBNETS: warm_pools[0].subnets: not valid JSON")


def test_list_index_applies_to_a_list_given_whole_in_the_environment() -> None:
    env = {"VKEC2_WARM_POOLS": '[{"name": "a"}]', "VKEC2_WARM_POOLS__0__DESIRED_COUNT": "5"}
    s = load_settings(env={**env, "VKEC2_AGENT__INSECURE_PLAINTEXT": "true"})
    assert [(p.name, p.desired_count) for p in s.warm_pools] == [("a", 5)]


def test_json_null_and_keys_below_plain_values_name_the_variable() -> None:
    (error,) = errors_of({"VKEC2_WARM_POOLS": "null"})
    assert error.startswith("env VKEC2_WARM_POOLS: warm_pools: Input should be a valid list")
    (error,) = errors_of({"VKEC2_REGION__X": "1"})
    assert error == "env VKEC2_REGION__X: region.x: region is not a mapping"


def test_every_bad_json_variable_is_reported() -> None:
    errors = errors_of({"VKEC2_EC2__SUBNETS": "[", "VKEC2_QUOTAS__CODES": "{", "VKEC2_AGENT__PORT": "7"})
    assert sorted(e.split(":")[0] for e in errors) == ["env VKEC2_EC2__SUBNETS", "env VKEC2_QUOTAS__CODES"]
    assert all("not valid JSON" in e for e in errors)
