"""The installer's checks (Python version, sha256, failure marker) run as shell, and agent.artifact config.

The rendered scripts must parse (``bash -n``); the lines between the "install checks" markers are
sourced in a sandbox whose PATH holds only stub ``python3*`` commands and the tools the checks use,
so the Python search and the checksum refusal run for real without touching the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.userdata import INSTALL_FAILED_MARKER as AGENT_MARKER
from agent.userdata import render_user_data
from vkec2.config import Settings, load_config
from vkec2.config.errors import InvalidConfig
from vkec2.contract import INSTALL_FAILED_MARKER
from vkec2.domain.podspec import user_data_for

DIGEST = "ab" * 32
ARTIFACTS = {
    "linux-x86_64": ("s3://vk-artifacts/agent/vkec2-agent-linux-x86_64.tar.gz", DIGEST),
    "linux-aarch64": ("s3://vk-artifacts/agent/vkec2-agent-linux-aarch64.tar.gz", "cd" * 32),
    "macos-arm64": ("s3://vk-artifacts/agent/vkec2-agent-macos-arm64.tar.gz", "ef" * 32),
}


def checks(script: str) -> str:
    start = script.index("# --- vkec2 install checks")
    return script[start : script.index("# --- end of vkec2 install checks ---")]


def stub_python(bindir: Path, name: str, version: tuple[int, int]) -> None:
    """A fake interpreter that answers the version checks as Python ``version`` would."""
    ok = 0 if version >= (3, 10) else 1
    (bindir / name).write_text(
        "#!/bin/sh\n"
        'case "$2" in *">= (3, 10)"*) exit ' + str(ok) + " ;; esac\n"
        f'echo "{version[0]}.{version[1]}"\n'
    )
    (bindir / name).chmod(0o755)


def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("cut", "head", "sha256sum", "cat"):
        found = shutil.which(tool)
        assert found is not None
        os.symlink(found, bindir / tool)
    return bindir, {"PATH": str(bindir), "CONSOLE": str(tmp_path / "console")}


def run_checks(script: str, call: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    body = "set -euo pipefail\n" + checks(script) + call + "\necho REACHED\n"
    return subprocess.run([bash, "-c", body], capture_output=True, text=True, env=env, cwd=cwd, timeout=20)


@pytest.mark.parametrize("os_name", ["linux", "darwin"])
@pytest.mark.parametrize("pinned", [True, False])
def test_rendered_scripts_parse(tmp_path: Path, os_name: str, pinned: bool) -> None:
    script = render_user_data(
        os_name, s3_bucket="b", s3_key="agent.tar.gz", artifacts=ARTIFACTS if pinned else None
    )
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert ('pip" install' in script.split("else\n  # Legacy")[0]) is False
    if pinned:
        assert DIGEST in script if os_name == "linux" else "ef" * 32 in script
        assert "-I -S" in script or "<string>-I</string>" in script


def test_a_too_old_python_prints_the_marker_and_stops(tmp_path: Path) -> None:
    bindir, env = sandbox(tmp_path)
    stub_python(bindir, "python3", (3, 7))
    done = run_checks(
        render_user_data("linux", s3_bucket="", s3_key="", artifacts=ARTIFACTS), "find_python", env, tmp_path
    )
    assert done.returncode == 1
    assert "REACHED" not in done.stdout
    line = f"{INSTALL_FAILED_MARKER}: the agent needs Python >= 3.10"
    assert line in done.stderr and "python3=3.7" in done.stderr
    assert (tmp_path / "console").read_text().startswith(line)  # the console copy the fleet reads


def test_the_newest_python_of_at_least_3_10_is_chosen(tmp_path: Path) -> None:
    bindir, env = sandbox(tmp_path)
    stub_python(bindir, "python3", (3, 7))
    stub_python(bindir, "python3.11", (3, 11))
    done = run_checks(
        render_user_data("darwin", s3_bucket="b", s3_key="k"), 'find_python; echo "$PYTHON"', env, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(bindir / "python3.11")


def test_a_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    _, env = sandbox(tmp_path)
    blob = tmp_path / "agent.tar.gz"
    blob.write_bytes(b"not the artifact")
    script = render_user_data("linux", s3_bucket="", s3_key="", artifacts=ARTIFACTS)
    ok = hashlib.sha256(blob.read_bytes()).hexdigest()
    good = run_checks(script, f'ARTIFACT=s3://b/k; verify_sha256 "{blob}" {ok}', env, tmp_path)
    assert good.returncode == 0 and "REACHED" in good.stdout, good.stderr
    bad = run_checks(script, f'ARTIFACT=s3://b/k; verify_sha256 "{blob}" {DIGEST}', env, tmp_path)
    assert bad.returncode == 1 and "REACHED" not in bad.stdout
    assert (
        f"{INSTALL_FAILED_MARKER}: agent artifact s3://b/k has sha256 {ok}, expected {DIGEST}" in bad.stderr
    )


def test_the_marker_is_one_wire_name() -> None:
    assert AGENT_MARKER == INSTALL_FAILED_MARKER


def test_agent_artifact_config_renders_every_platform() -> None:
    settings = Settings.model_validate(
        {
            "agent": {
                "artifact": {
                    "url": "s3://vk-artifacts/agent/vkec2-agent-{platform}.tar.gz",
                    "sha256": {plat: digest for plat, (_, digest) in ARTIFACTS.items()},
                }
            }
        }
    )
    linux = user_data_for(settings, "m7g.large")
    mac = user_data_for(settings, "mac2.metal")
    assert linux is not None and mac is not None
    assert "x86_64|amd64) ARTIFACT=s3://vk-artifacts/agent/vkec2-agent-linux-x86_64.tar.gz" in linux
    assert "aarch64|arm64) ARTIFACT=s3://vk-artifacts/agent/vkec2-agent-linux-aarch64.tar.gz" in linux
    assert "vkec2-agent-macos-arm64.tar.gz; ARTIFACT_SHA256=" + "ef" * 32 in mac
    assert "venv/bin/python" not in linux


@pytest.mark.parametrize(
    ("artifact", "problem"),
    [
        ({"url": "https://example.com/a.tgz", "sha256": {"linux-x86_64": DIGEST}}, "s3://BUCKET/KEY"),
        ({"url": "s3://b-1/k", "sha256": {}}, "at least one platform"),
        ({"url": "s3://b-1/k", "sha256": {"linux-x86_64": "abc"}}, "64 lowercase hex"),
        ({"url": "s3://b-1/k", "sha256": {"windows": DIGEST}}, "unknown platform"),
        (
            {"url": "s3://b-1/k", "s3_bucket": "b-1", "s3_key": "k", "sha256": {"linux-x86_64": DIGEST}},
            "either",
        ),
    ],
)
def test_bad_artifact_config_is_named(tmp_path: Path, artifact: dict[str, object], problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"agent": {"artifact": artifact}}))
    with pytest.raises(InvalidConfig) as err:
        load_config(path, env={})
    assert problem in str(err.value) and "agent.artifact" in str(err.value)


def test_the_pypi_install_is_warned_about_at_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    plain = {"insecure_plaintext": True}  # this test is about the install, not the transport
    path.write_text(yaml.safe_dump({"bootstrap": {"s3_bucket": "b", "s3_key": "agent.tgz"}, "agent": plain}))
    assert any("installs grpcio" in w and "PyPI" in w for w in load_config(path, env={}).warnings)
    path.write_text(
        yaml.safe_dump(
            {
                "bootstrap": {"s3_bucket": "b", "s3_key": "agent.tgz"},
                "agent": {
                    **plain,
                    "artifact": {
                        "s3_bucket": "b-1",
                        "s3_key": "a-{platform}",
                        "sha256": {"macos-arm64": DIGEST},
                    },
                },
            }
        )
    )
    assert not any("PyPI" in w for w in load_config(path, env={}).warnings)
