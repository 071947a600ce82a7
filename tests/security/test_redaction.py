"""Secrets stay secret: URL passwords, tokens and private keys are hidden in every message, log line
and printed configuration, and an end-to-end fleet run with a Redis password and a fleet CA shows
neither the password nor the CA's private key in any of its logs or command output (its pod runs
over mTLS on the simulator, so the workers really sign an agent's CSR with that key)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.standalone import parse_manifest
from tests.fleet.conftest import ec2_proxy
from tests.producer.conftest import StartProducer, apiserver, start_producer
from tests.support.awslike import E2E_DEFAULT
from tests.support.bootstrap import BootstrapKit
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, fleet_behind
from tests.support.services import ManagedProcess, free_port, start_redis, wait_until
from vkec2.cli.main import main as vkec2
from vkec2.config import InvalidConfig, LoggingSettings, Settings, load_config
from vkec2.config.redaction import MASK, is_secret_key, redact, redact_config
from vkec2.domain.models import Phase
from vkec2.observability import logs

__all__ = ["apiserver", "ec2_proxy", "start_producer"]

PASSWORD = "Pw-9f3c1e7a-not-in-any-log"
NODE = "vk-redact-0"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("redis://:s3cr3t@127.0.0.1:6379/0", "s3cr3t"),
        ("rediss://fleet:s3cr3t@redis.internal:6380/1", "s3cr3t"),
        ("rediss://fleet:p@ss@word@redis.internal/1 and more", "ss@word"),
        ("redis://:pa/ss@host:6379/0", "pa/ss"),
        ("redis://:pa ss;x@host/0", "pa ss;x"),
        ("://a b:s3cr3t@", "s3cr3t"),
        ("sentinel://:s3cr3t@10.0.0.1:26379;sentinel://10.0.0.2:26379", "s3cr3t"),
        ("error connecting to 'redis://:s3cr3t@h:1/0': refused", "s3cr3t"),
        ("https://user:s3cr3t@example.com/path", "s3cr3t"),
        ("GET /x?token=s3cr3t&page=2", "s3cr3t"),
        ("Authorization: Bearer s3cr3t.abc-def", "s3cr3t"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIs3cr3t\n-----END EC PRIVATE KEY-----", "MHcCAQEEIs3cr3t"),
        ("-----BEGIN PRIVATE KEY-----\\nMIIEvs3cr3t\\n-----END PRIVATE KEY-----", "MIIEvs3cr3t"),
        ("a key cut short: -----BEGIN RSA PRIVATE KEY-----\nMIIEs3cr3t", "MIIEs3cr3t"),
    ],
)
def test_redact_hides_the_secret_and_keeps_the_rest(text: str, secret: str) -> None:
    shown = redact(text)
    assert secret not in shown and MASK in shown
    assert redact(shown) == shown  # idempotent


@pytest.mark.parametrize(
    "text", ["redis://127.0.0.1:6379/0", "unix:///run/redis.sock", "m5.large in us-west-2", "a=b&c=d"]
)
def test_redact_leaves_text_without_secrets_alone(text: str) -> None:
    assert redact(text) == text


def test_secret_keys_and_the_keys_that_only_name_a_file() -> None:
    for name in ("password", "redis_password", "bootstrap_token", "client_secret", "basic_auth", "api-key"):
        assert is_secret_key(name), name
    for name in ("ca_key_file", "token_file", "password_file", "tokens", "key_pair", "instance_types"):
        assert not is_secret_key(name), name


def test_a_printed_configuration_hides_every_secret() -> None:
    settings = Settings.model_validate(
        {"redis_url": f"redis://:{PASSWORD}@h:6379/0", "flower": {"basic_auth": [f"admin:{PASSWORD}"]}}
    )
    shown = json.dumps(redact_config({**settings.model_dump(mode="json"), "bootstrap_token": PASSWORD}))
    assert PASSWORD not in shown
    assert "redis://:***@h:6379/0" in shown and "admin:***" in shown


def test_vkec2_config_check_prints_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"redis_url: 'rediss://u:{PASSWORD}@h/0'\nflower: {{basic_auth: ['ops:{PASSWORD}']}}\n"
        "agent: {endpoint: 'static:127.0.0.1:8200'}\n"
    )
    assert vkec2(["config", "check", "--no-env", str(path)]) == 0
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and "ops:***" in out.out


def test_a_configuration_error_shows_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"flower": {"basic_auth": [f"ops:{PASSWORD},x"]}, "redis_url": f"ftp://:{PASSWORD}@h"})
    )
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env={})
    text = str(info.value)
    assert "flower.basic_auth" in text and "redis_url" in text
    assert PASSWORD not in text


def test_log_lines_and_tracebacks_hide_secrets() -> None:
    for fmt in ("kv", "json"):
        stream = io.StringIO()
        handler = logs.setup(LoggingSettings(format=fmt), "test", stream=stream)
        try:
            log = logging.getLogger("vkec2.test.redaction")
            log.warning("connecting to %s", f"redis://:{PASSWORD}@h:1/0")
            try:
                raise ConnectionError(f"cannot reach rediss://u:{PASSWORD}@h/0")
            except ConnectionError:
                log.exception("failed")
        finally:
            logging.getLogger().removeHandler(handler)
        text = stream.getvalue()
        assert "connecting to redis://:***@h:1/0" in text and "rediss://u:***@h/0" in text
        assert PASSWORD not in text


def test_vkec2_gc_names_the_broker_without_its_password(tmp_path: Path) -> None:
    """The issue's report: ``vkec2 gc`` printed the Redis password when it could not publish."""
    path = tmp_path / "c.yaml"
    path.write_text(f"redis_url: 'redis://:{PASSWORD}@127.0.0.1:{free_port()}/0'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "gc", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot publish to the broker at redis://:***@127.0.0.1:" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[str]:
    """A private redis-server that requires PASSWORD; yields its base URL without credentials."""
    proc, url = start_redis(args=["--requirepass", PASSWORD])
    yield url
    proc.stop()


@pytest.fixture
def redis_url(locked_redis: str) -> str:
    """The fleet's Redis for this module: the password-protected server (overrides tests/conftest)."""
    client = redis.Redis.from_url(f"{locked_redis.replace('redis://', f'redis://:{PASSWORD}@')}/0")
    client.flushdb()
    client.close()
    return f"{locked_redis.replace('redis://', f'redis://:{PASSWORD}@')}/0"


MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: secretive}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: sim, command: [sleep, "3600"]}]
"""


@pytest.mark.slow
def test_an_end_to_end_run_logs_neither_the_redis_password_nor_the_ca_key(
    start_producer: StartProducer,
    locked_redis: str,
    redis_url: str,
    moto_url: str,
    ec2_proxy: Ec2Proxy,
    tmp_path: Path,
) -> None:
    with pytest.raises(redis.AuthenticationError):  # the password is really needed
        redis.Redis.from_url(f"{locked_redis}/0").ping()
    kit = BootstrapKit(tmp_path)
    sim, sim_endpoint, agent = kit.start_tls_sim(moto_url)
    key_body = [
        line for line in kit.ca.key_pem.decode().splitlines() if line and not line.startswith("-----")
    ]
    # EC2 as AWS behaves (lag, throttling, slow transitions); the simulator reads moto itself.
    fleet = fleet_behind(ec2_proxy, tmp_path, redis_url, sim_endpoint, {"agent": agent}, aws_like=E2E_DEFAULT)
    try:
        _run_and_grep(fleet, start_producer, tmp_path, key_body, kit.ca.key_pem.decode())
    finally:
        fleet.stop()
        sim.stop()


def _run_and_grep(
    fleet: FleetHarness, start_producer: StartProducer, tmp_path: Path, key_body: list[str], key_pem: str
) -> None:
    """Run one pod to Running over mTLS (the workers sign its agent's CSR with the CA key), then
    read every log and command output for the password and the key."""
    fleet.start_worker(concurrency=2)
    beat = fleet.start_beat()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "p.yaml").write_text(MANIFEST)
    (uid,) = {p["metadata"]["uid"] for p in parse_manifest("p.yaml", MANIFEST, NODE)}
    producer = start_producer(fleet, NODE, manifests=manifests)
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=150)
    wait_until(lambda: "beat: Starting" in beat.output(), 10, "beat's log")
    commands = [
        subprocess.run(
            [sys.executable, "-m", "vkec2.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=fleet.env(),
            check=False,
        )
        for args in (["status"], ["pods"], ["config", "check", str(fleet.config_path)])
    ]
    processes: list[ManagedProcess] = [*fleet.workers, producer]
    everything = "\n".join([*(p.output() for p in processes), *(c.stdout + c.stderr for c in commands)])

    assert f"{uid}" in "".join(p.output() for p in fleet.workers[:1]), "the worker logged nothing of the pod"
    assert "redis://:***@" in everything  # the URL was printed, masked
    assert PASSWORD not in everything
    leaked = [line for line in key_body if line in everything]
    assert not leaked, f"the CA private key appears in the logs: {leaked[:1]}"
    assert key_pem not in everything
