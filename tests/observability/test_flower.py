"""Flower: basic auth from the fleet configuration, on by default outside local mode.

``celery -A tasks flower`` is started for real (a subprocess on the test Redis): without
credentials outside local mode it refuses to start with a clear message; with ``flower.basic_auth``
it asks for them; in local mode it runs open. The policy itself is checked case by case.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.support.services import ManagedProcess, free_port, wait_until
from vkec2.config import FlowerSettings
from vkec2.observability.flower import REFUSAL, decide

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, redis_url: str, flower: dict[str, Any]) -> dict[str, str]:
    path = tmp_path / "flower.yaml"
    # Agents on loopback: plaintext is allowed without a flag (vkec2/config/transport.py).
    agent = {"endpoint": "static:127.0.0.1:8200"}
    path.write_text(yaml.safe_dump({"redis_url": redis_url, "flower": flower, "agent": agent}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VKEC2_", "FLOWER_"))}
    env["VKEC2_CONFIG"] = str(path)
    return env


def _flower(port: int) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1"]


def _get(port: int, auth: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/workers")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _serving(proc: ManagedProcess, port: int) -> bool:
    if not proc.alive():
        raise RuntimeError(f"flower exited:\n{proc.output()[-3000:]}")
    try:
        _get(port)
    except OSError:
        return False
    return True


def test_flower_refuses_to_start_without_credentials_outside_local_mode(
    tmp_path: Path, redis_url: str
) -> None:
    proc = subprocess.run(
        _flower(free_port()),
        cwd=ROOT,
        env=_env(tmp_path, redis_url, {}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "refusing to start Flower without authentication outside local mode" in proc.stderr


def test_flower_asks_for_the_configured_credentials(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = _env(tmp_path, redis_url, {"basic_auth": ["admin:s3cret-pass"]})
    proc = ManagedProcess("flower", _flower(port), env=env, cwd=str(ROOT)).start()
    try:
        wait_until(lambda: _serving(proc, port), 60, "flower to answer")
        assert _get(port) == 401
        assert _get(port, "admin:wrong") == 401
        assert _get(port, "admin:s3cret-pass") == 200
    finally:
        proc.stop()


def test_flower_runs_open_in_local_mode(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = _env(tmp_path, redis_url, {"local": True})
    proc = ManagedProcess("flower", _flower(port), env=env, cwd=str(ROOT)).start()
    try:
        wait_until(lambda: _serving(proc, port), 60, "flower to answer")
        assert _get(port) == 200
    finally:
        proc.stop()


def test_auth_policy() -> None:
    none = FlowerSettings()
    assert decide(none, [], {}).error == REFUSAL
    assert decide(FlowerSettings(local=True), [], {}) == decide(FlowerSettings(local=True), [], {})
    assert decide(FlowerSettings(local=True), [], {}).error is None
    configured = decide(FlowerSettings(basic_auth=["a:b", "c:d"]), ["--port=5555"], {})
    assert configured.env == {"FLOWER_BASIC_AUTH": "a:b,c:d"} and configured.error is None
    # Credentials the operator passes win over the configuration and satisfy the requirement.
    for argv, environ in (
        (["--basic-auth=x:y"], {}),
        (["--basic_auth=x:y"], {}),
        (["--auth=.*@example\\.com"], {}),
        ([], {"FLOWER_BASIC_AUTH": "x:y"}),
    ):
        decision = decide(FlowerSettings(basic_auth=["a:b"]), argv, environ)
        assert decision.env == {} and decision.error is None, (argv, environ)
        assert decide(none, argv, environ).error is None


def test_basic_auth_entries_are_validated() -> None:
    for bad in (["admin"], ["admin:"], [":pw"], ["a:b,c:d"]):
        with pytest.raises(ValidationError):
            FlowerSettings(basic_auth=bad)
