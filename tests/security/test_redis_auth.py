"""Redis access without the password is refused, and the fleet works with it.

A real ``redis-server`` started with ``requirepass`` (as the chart's and compose's bundled Redis)
refuses every client without the password or with a wrong one — a raw client, the fleet's store,
its Celery broker and the ``vkec2`` CLI, which says so without printing the password — while a
worker given the password in ``redis_url`` runs a pod to Running. ``rediss://`` URLs are accepted
by the configuration, and both the store and the broker verify the server's certificate against a
real TLS ``redis-server``: trusted CA, connected; another CA, refused. The start-up commands the
chart and compose render for their bundled Redis are run as they are (on a private port) and
require the password too.
"""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from tests.support.fleet import FleetHarness, example_pod
from tests.support.helm import PREFIX, Helm, container
from tests.support.kubetools import helm_path
from vkec2.broker.app import make_app
from vkec2.ca import FleetCA
from vkec2.cli.procs import ManagedProcess, free_port, port_open, start_redis, wait_until
from vkec2.config import Settings, load_config
from vkec2.domain.models import Phase
from vkec2.store.redis_store import Store

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_AGENTS = {"endpoint": "static:127.0.0.1:8200"}


@pytest.fixture(scope="module")
def locked() -> Iterator[tuple[str, str]]:
    """``(host:port, password)`` of a private redis-server that requires a password."""
    password = secrets.token_urlsafe(24)
    proc, url = start_redis(args=["--requirepass", password])
    yield url.removeprefix("redis://"), password
    proc.stop()


def _settings(url: str) -> Settings:
    return Settings.model_validate({"redis_url": url, "cluster_name": "locked", "agent": LOOPBACK_AGENTS})


@pytest.mark.parametrize("credentials", ["", ":wrong-password@", "default:wrong-password@"])
def test_redis_without_the_password_is_refused(locked: tuple[str, str], credentials: str) -> None:
    address, _ = locked
    url = f"redis://{credentials}{address}/0"
    client = redis.Redis.from_url(url)
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    client.close()
    store = Store.from_settings(_settings(url))
    with pytest.raises(redis.AuthenticationError):
        store.ensure_epoch()
    store.redis.close()
    app = make_app(_settings(url))
    with app.connection_for_write() as conn, pytest.raises(Exception, match=r"(?i)auth|password"):
        conn.ensure_connection(max_retries=1)
    app.close()


def test_the_cli_says_redis_refused_without_printing_the_password(
    locked: tuple[str, str], tmp_path: Path
) -> None:
    address, password = locked
    env = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    results = {}
    for name, secret in (("right", password), ("wrong", "not-" + password)):
        config = tmp_path / f"{name}.yaml"
        raw = {
            "redis_url": f"redis://:{secret}@{address}/0",
            "cluster_name": "locked",
            "agent": LOOPBACK_AGENTS,
        }
        config.write_text(yaml.safe_dump(raw))
        results[name] = subprocess.run(
            [sys.executable, "-m", "vkec2.cli", "status", "-o", "json"],
            capture_output=True,
            text=True,
            env={**env, "VKEC2_CONFIG": str(config)},
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert results["right"].returncode == 0, results["right"].stderr
    wrong = results["wrong"]
    assert wrong.returncode == 1
    assert "redis" in wrong.stderr.lower()
    for result in results.values():
        assert password not in result.stdout + result.stderr


def test_the_fleet_runs_a_pod_with_the_password(
    locked: tuple[str, str], tmp_path: Path, moto_url: str, agent_sim: str
) -> None:
    address, password = locked
    fleet = FleetHarness(tmp_path, f"redis://:{password}@{address}/0", moto_url, agent_sim)
    try:
        fleet.start_worker(concurrency=2)
        uid = fleet.submit(example_pod("behind-a-password"))
        fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
        assert password not in "".join(w.output() for w in fleet.workers)
    finally:
        fleet.stop()


def test_rediss_urls_are_accepted_by_the_configuration() -> None:
    url = "rediss://:s3cret@redis.example:6380/2"
    settings = load_config(
        None, env={"VKEC2_REDIS_URL": url, "VKEC2_AGENT__ENDPOINT": "static:127.0.0.1:1"}
    ).settings
    assert settings.redis_url == url
    app = make_app(settings)
    with app.connection_for_write() as conn:
        assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    app.close()
    assert make_app(_settings("redis://r:6379/0")).connection_for_write().ssl is False


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, Path]]:
    """``(port, password, CA file)`` of a private redis-server speaking TLS only."""
    tmp = tmp_path_factory.mktemp("tls-redis")
    ca = FleetCA.create(common_name="test Redis CA")
    server = ca.issue_agent_server_cert("redis", ips=["127.0.0.1"])
    for name, data in (
        ("ca.crt", ca.cert_pem),
        ("server.crt", server.cert_pem),
        ("server.key", server.key_pem),
    ):
        (tmp / name).write_bytes(data)
    password, port = secrets.token_urlsafe(24), free_port()
    argv = ["redis-server", "--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--tls-port", str(port), "--tls-auth-clients", "no", "--requirepass", password]
    argv += ["--tls-cert-file", str(tmp / "server.crt"), "--tls-key-file", str(tmp / "server.key")]
    argv += ["--tls-ca-cert-file", str(tmp / "ca.crt")]
    proc = ManagedProcess("redis-tls", argv).start()
    wait_until(lambda: port_open(port), 15, "redis-server's TLS port")
    yield port, password, tmp / "ca.crt"
    proc.stop()


def test_rediss_verifies_the_server_certificate(
    tls_redis: tuple[int, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, password, ca_file = tls_redis
    settings = _settings(f"rediss://:{password}@127.0.0.1:{port}/0")
    foreign = ca_file.with_name("foreign.crt")
    foreign.write_bytes(FleetCA.create(common_name="another CA").cert_pem)
    for trusted, works in ((ca_file, True), (foreign, False)):
        monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
        store = Store.from_settings(settings)
        app = make_app(settings)
        if works:
            assert store.redis.ping()
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
        else:
            with pytest.raises(redis.ConnectionError, match=r"(?i)certificate verify failed"):
                store.redis.ping()
            with app.connection_for_write() as conn, pytest.raises(Exception, match=r"(?i)certificate"):
                conn.ensure_connection(max_retries=1)
        store.redis.close()
        app.close()


def _run_script(script: str, tmp: Path, env: dict[str, str]) -> tuple[ManagedProcess, int]:
    """A bundled Redis's shell script, on a private port and data directory instead of 6379 and /data."""
    port = free_port()
    assert script.count("exec redis-server -") == 1
    script = script.replace("exec redis-server -", f"exec redis-server - --port {port} --bind 127.0.0.1")
    script = script.replace("dir /data", f"dir {tmp}")
    proc = ManagedProcess("bundled-redis", ["sh", "-c", script], env={**os.environ, **env}).start()
    wait_until(lambda: port_open(port) or not proc.alive(), 15, "the bundled Redis")
    assert proc.alive(), proc.output()
    return proc, port


def _requires(port: int, password: str) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    assert redis.Redis(port=port, password=password).ping()


def test_the_charts_bundled_redis_requires_the_password(tmp_path: Path) -> None:
    objs = Helm(helm_path(), tmp_path).template()
    redis_container = container(objs.get("Deployment", f"{PREFIX}-redis"))
    assert redis_container["command"] == ["sh", "-c"]
    (script,) = redis_container["args"]
    password = secrets.token_urlsafe(24)
    proc, port = _run_script(script, tmp_path, {"REDIS_PASSWORD": password})
    try:
        _requires(port, password)
        shell, flag, check = redis_container["readinessProbe"]["exec"]["command"]
        assert (shell, flag) == ("sh", "-c") and "redis-cli ping" in check
        probe = [shell, flag, check.replace("redis-cli ping", f"redis-cli -p {port} ping")]

        def ping(auth: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "REDISCLI_AUTH": auth}
            return subprocess.run(probe, capture_output=True, text=True, env=env, timeout=10)

        assert ping(password).returncode == 0, ping(password)  # the probe passes with the password
        assert ping("wrong").returncode != 0  # and fails without it
        assert password not in " ".join(proc.argv)
    finally:
        proc.stop()


def test_the_compose_redis_requires_a_password(tmp_path: Path) -> None:
    redis_service = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())["services"]["redis"]
    script = redis_service["command"][2].replace("$$", "$")  # compose's escape of a literal $
    refused = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "REDIS_PASSWORD": ""},
        timeout=30,
    )
    assert refused.returncode == 64 and "set REDIS_PASSWORD" in refused.stderr
    password = secrets.token_urlsafe(24)
    proc, port = _run_script(script, tmp_path, {"REDIS_PASSWORD": password})
    try:
        _requires(port, password)
    finally:
        proc.stop()
