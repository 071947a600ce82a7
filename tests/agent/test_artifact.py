"""The pinned agent artifact: built for this platform, unpacked alone, it serves with nothing but Python.

The build (``scripts/agent_artifact.py``, what ``make agent-artifact`` runs) is done once per
session for this machine's platform and Python, through the wheel cache under ``dist/`` (PyPI the
first time, offline afterwards). The tarball is unpacked into an empty directory and the agent runs
from it under ``python -I -S`` (no site-packages of this machine, no PYTHONPATH, no user site),
started with ``--insecure`` on a loopback port; gRPC health must answer SERVING. The sha256 files
and manifest must match the tarball, and the installer's checksum check must refuse a changed one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agent.userdata import render_user_data
from tests.agent.conftest import ROOT, fast_conn
from tests.support.services import ManagedProcess, free_port, port_open, wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.contract import INSTALL_FAILED_MARKER
from vkec2.domain.agents import AgentTarget

pytestmark = pytest.mark.xdist_group("agent-artifact")  # one build per session, on one worker
PLATFORM = "linux-aarch64" if platform.machine() in ("aarch64", "arm64") else "linux-x86_64"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This platform's artifact for this Python, built once per session."""
    out = tmp_path_factory.mktemp("agent-dist")
    cmd = [sys.executable, str(ROOT / "scripts" / "agent_artifact.py"), "build", "--platform", "local"]
    cmd += ["--python", PY, "--out", str(out), "--cache", str(ROOT / "dist" / "wheel-cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and (
        "NewConnectionError" in done.stderr or "No matching distribution" in done.stderr
    ):
        pytest.skip(f"the locked wheels are neither cached nor reachable: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr
    (tarball,) = out.glob("vkec2-agent-*.tar.gz")
    return tarball


def test_the_artifact_carries_its_checksum_and_manifest(artifact: Path) -> None:
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert artifact.with_name(artifact.name + ".sha256").read_text() == f"{digest}  {artifact.name}\n"
    (entry,) = json.loads((artifact.parent / "manifest.json").read_text())["artifacts"]
    assert entry["sha256"] == digest and entry["file"] == artifact.name
    assert entry["python"] == f"cp{PY.replace('.', '')}" and "+lock." in entry["version"]
    with tarfile.open(artifact) as tar:
        members = tar.getmembers()
    assert {m.name.split("/")[0] for m in members} == {"vkec2-agent"}
    assert all(m.mtime == 0 and m.uid == 0 for m in members)  # reproducible: no build time or owner
    names = {m.name for m in members}
    assert "vkec2-agent/site-packages/agent/server.py" in names
    assert any(f"cygrpc.cpython-{PY.replace('.', '')}" in n for n in names)


def test_the_agent_serves_from_the_unpacked_artifact_alone(artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "install"
    root.mkdir()
    with tarfile.open(artifact) as tar:
        tar.extractall(root, filter="data")
    home = root / "vkec2-agent"
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VKEC2_PYTHON": sys.executable}
    # Isolation holds: this Python under -I -S sees none of this machine's packages ...
    bare = subprocess.run([sys.executable, "-I", "-S", "-c", "import grpc"], capture_output=True, env=clean)
    assert bare.returncode != 0
    # ... and the launcher finds everything the agent needs in the artifact.
    check = subprocess.run(
        [str(home / "bin" / "vkec2-agent"), "--check"],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert f"imports on Python {PY}" in check.stdout
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--insecure", "--instance-id", "i-artifact"]
    proc = ManagedProcess(
        "artifact-agent", [str(home / "bin" / "vkec2-agent"), *args], env=clean, cwd=str(tmp_path)
    )
    proc.start()
    client = AgentClient(fast_conn(port))
    try:
        wait_until(lambda: port_open(port) or not proc.alive(), 30, "artifact agent listening")
        assert proc.alive(), proc.output()
        target = AgentTarget(f"127.0.0.1:{port}", "i-artifact")
        wait_until(lambda: client.serving(target), 10, "artifact agent SERVING")
        assert client.identity(target) == "i-artifact"
    finally:
        client.close()
        proc.stop()


def test_a_changed_artifact_is_refused_by_the_installer(artifact: Path, tmp_path: Path) -> None:
    expected = hashlib.sha256(artifact.read_bytes()).hexdigest()
    tampered = tmp_path / "agent.tar.gz"
    shutil.copyfile(artifact, tampered)
    with open(tampered, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    script = render_user_data(
        "linux", s3_bucket="", s3_key="", artifacts={"linux-x86_64": ("s3://b/k", expected)}
    )
    checks = script[
        script.index("# --- vkec2 install checks") : script.index("# --- end of vkec2 install checks")
    ]
    env = {"PATH": "/usr/bin:/bin", "CONSOLE": str(tmp_path / "console")}

    def verify(path: Path) -> subprocess.CompletedProcess[str]:
        call = f"ARTIFACT=s3://b/k\nverify_sha256 '{path}' {expected}\necho VERIFIED\n"
        body = f"set -euo pipefail\n{checks}{call}"
        return subprocess.run(["bash", "-c", body], capture_output=True, text=True, env=env, timeout=20)

    assert "VERIFIED" in verify(artifact).stdout
    refused = verify(tampered)
    assert refused.returncode == 1 and "VERIFIED" not in refused.stdout
    assert f"{INSTALL_FAILED_MARKER}: agent artifact s3://b/k has sha256" in refused.stderr
    assert f"expected {expected}: refused" in (tmp_path / "console").read_text()


def test_the_whole_installer_runs_in_a_sandbox(artifact: Path, tmp_path: Path) -> None:
    """The rendered Linux script end to end: system paths under tmp_path, aws and systemctl stubbed."""
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    script = render_user_data(
        "linux",
        s3_bucket="",
        s3_key="",
        artifacts={"linux-x86_64": ("s3://b/k", digest)},
        install_dir=str(tmp_path / "opt"),
    )
    for system in ("/var/log/", "/etc/systemd/", "/var/lib/"):
        script = script.replace(system, f"{tmp_path}{system}")
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    (tmp_path / "var" / "log").mkdir(parents=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "aws").write_text(f'#!/bin/bash\ncp {artifact} "${{@: -1}}"\n')
    (bindir / "systemctl").write_text('#!/bin/sh\necho "systemctl $*"\n')
    for stub in ("aws", "systemctl"):
        (bindir / stub).chmod(0o755)
    (bindir / f"python{PY}").symlink_to(Path(sys.executable).resolve())
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "CONSOLE": str(tmp_path / "console")}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemctl enable --now vkec2-agent.service" in done.stdout
    unit = (tmp_path / "etc" / "systemd" / "system" / "vkec2-agent.service").read_text()
    assert f"ExecStart={tmp_path}/opt/python -I -S {tmp_path}/opt/vkec2-agent/launch.py" in unit
    assert (tmp_path / "opt" / "python").resolve() == Path(sys.executable).resolve()
    assert not (tmp_path / "opt" / "venv").exists()  # nothing pip-installed
    assert not (tmp_path / "console").exists()
