"""The agent installs and serves from a fresh virtual environment holding only its three dependencies.

The environment gets grpcio, grpcio-health-checking and protobuf from PyPI and nothing else; a copy
of ``agent/`` (no vkec2, no tasks, no producer next to it) goes on PYTHONPATH, as on an instance.
The test then drives it over real gRPC from this process. Skipped only when PyPI is unreachable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.agent.conftest import ROOT, fast_conn, pod, sh
from tests.support.services import ManagedProcess, free_port, port_open, wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.domain.agents import AgentTarget

AGENT_DEPS = ["grpcio", "grpcio-health-checking", "protobuf"]


def test_agent_serves_from_a_fresh_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *AGENT_DEPS],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if pip.returncode != 0 and (
        "NewConnectionError" in pip.stderr or "Could not find a version" in pip.stderr
    ):
        pytest.skip(f"PyPI unreachable: {pip.stderr[-300:]}")
    assert pip.returncode == 0, pip.stderr
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert {"grpcio", "grpcio-health-checking", "protobuf"} <= names
    assert not names & {"vkec2", "boto3", "cryptography", "pydantic", "celery"}

    app = tmp_path / "app"
    shutil.copytree(ROOT / "agent", app / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    proc = ManagedProcess(
        "fresh-agent",
        [
            str(python),
            "-m",
            "agent",
            "--listen",
            f"127.0.0.1:{port}",
            "--insecure",
            "--instance-id",
            "i-fresh",
        ],
        env={"PYTHONPATH": str(app), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=str(tmp_path),
    ).start()
    client = AgentClient(fast_conn(port))
    try:
        wait_until(lambda: port_open(port) or not proc.alive(), 30, "fresh agent listening")
        assert proc.alive(), proc.output()
        assert "PLAINTEXT" in proc.output()  # the loud --insecure warning
        t = AgentTarget(f"127.0.0.1:{port}", "i-fresh")
        wait_until(lambda: client.serving(t), 10, "fresh agent serving")
        assert client.identity(t) == "i-fresh"
        client.launch(t, pod(sh("hello", "echo from-the-fresh-venv"), restart_policy="Never"))
        wait_until(lambda: client.status(t).phase == "Succeeded", 10, "pod done")
        assert b"".join(client.logs(t, "hello")) == b"from-the-fresh-venv\n"
        client.terminate(t, 1)
    finally:
        client.close()
        proc.stop()
    # Nothing of the fleet was importable there.
    probe = subprocess.run(
        [str(python), "-c", "import vkec2"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(app)},
        cwd=str(tmp_path),
    )
    assert probe.returncode != 0
    assert sys.executable != str(python)
