"""Plaintext agents are refused outside local mode (vkec2/config/transport.py): a configuration
without ``agent.tls`` loads only when its agents are on loopback or ``agent.insecure_plaintext`` is
named, which warns; ``vkec2 config check`` names the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vkec2.config import InvalidConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
TLS = json.dumps({"ca_cert_file": "/etc/vkec2/ca/ca.crt"})


def errors_of(env: dict[str, str]) -> tuple[str, ...]:
    with pytest.raises(InvalidConfig) as info:
        load_config(None, env=env)
    return info.value.errors


@pytest.mark.parametrize(
    "endpoint", [None, "private-ip", "public-ip", "static:10.0.0.7:8200", "static:agent-sim:8200"]
)
def test_agents_off_loopback_without_tls_are_refused_naming_the_setting(endpoint: str | None) -> None:
    env = {} if endpoint is None else {"VKEC2_AGENT__ENDPOINT": endpoint}
    (error,) = errors_of(env)
    assert error.startswith("configuration: agent.tls: not set, so workers and the producer would drive")
    assert "agent.insecure_plaintext: true" in error


@pytest.mark.parametrize(
    "endpoint", ["static:127.0.0.1:8200", "static:127.3.4.5:1", "static:[::1]:9", "static:localhost:80"]
)
def test_agents_on_loopback_may_be_plaintext_without_a_warning(endpoint: str) -> None:
    loaded = load_config(None, env={"VKEC2_AGENT__ENDPOINT": endpoint})
    assert loaded.settings.agent.tls is None
    assert loaded.warnings == ()


def test_the_named_insecure_flag_allows_plaintext_and_warns() -> None:
    loaded = load_config(None, env={"VKEC2_AGENT__INSECURE_PLAINTEXT": "true"})
    assert loaded.settings.agent.insecure_plaintext
    (warning,) = loaded.warnings
    assert "agent.insecure_plaintext is true" in warning and "PLAINTEXT" in warning


def test_tls_needs_no_flag_and_contradicts_it() -> None:
    assert load_config(None, env={"VKEC2_AGENT__TLS": TLS}).warnings == ()
    (error,) = errors_of({"VKEC2_AGENT__TLS": TLS, "VKEC2_AGENT__INSECURE_PLAINTEXT": "true"})
    assert error == (
        "env VKEC2_AGENT__INSECURE_PLAINTEXT: agent.insecure_plaintext: true, but agent.tls is set too; "
        "remove one of them"
    )


def test_config_check_refuses_plaintext_agents(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cluster_name: c1\nagent: {endpoint: public-ip}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    result = subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        env=clean,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"error: {path}: agent.tls: not set, so workers and the producer" in result.stderr
