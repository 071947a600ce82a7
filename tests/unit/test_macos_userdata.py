"""The macOS installer puts the agent under launchd as a daemon: a LaunchDaemons plist that parses
(plistlib), starts at load, is kept alive, logs to a file, runs the installed agent with the fleet's
arguments (TLS trust files included), and a script that is valid bash; shell metacharacters in the
arguments stay literal in the plist."""

from __future__ import annotations

import plistlib
import re
import subprocess
from pathlib import Path

from agent.userdata import render_user_data
from vkec2.ca import FleetCA

PLIST_BLOCK = re.compile(r"cat > \"\$\{PLIST\}\" <<'PLIST'\n(.*?)\nPLIST\n", re.DOTALL)


def _render(**kwargs: object) -> str:
    return render_user_data(
        "darwin",
        s3_bucket="vkec2-artifacts",
        s3_key="agent/agent.tar.gz",
        port=8300,
        region="us-east-2",
        **kwargs,  # type: ignore[arg-type]
    )


def _plist(script: str) -> dict[str, object]:
    found = PLIST_BLOCK.search(script)
    assert found, "no quoted plist here-document in the macOS user data"
    parsed = plistlib.loads(found.group(1).encode())
    assert isinstance(parsed, dict)
    return parsed


def test_the_agent_is_a_launchd_daemon(tmp_path: Path) -> None:
    ca = FleetCA.create()
    script = _render(
        extra_args=["--log-level=$HOME`id`"],
        fleet_ca_pem=ca.cert_pem.decode(),
        bootstrap_secret=ca.bootstrap_secret("token-1"),
    )
    plist = _plist(script)
    assert plist["Label"] == "com.vkec2.agent"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == "/var/log/vkec2-agent.log"
    assert plist["ProgramArguments"] == [
        "/opt/vkec2-agent/venv/bin/python",
        "-m",
        "agent",
        "--listen=0.0.0.0:8300",
        "--log-level=$HOME`id`",  # the here-document is quoted: nothing is expanded
        "--fleet-ca-file=/var/db/vkec2-agent/fleet-ca.pem",
        "--bootstrap-secret-file=/var/db/vkec2-agent/bootstrap-secret",
        "--state-dir=/var/db/vkec2-agent",
    ]
    env = plist["EnvironmentVariables"]
    assert isinstance(env, dict) and env["PYTHONPATH"] == "/opt/vkec2-agent"
    assert "/Library/LaunchDaemons/com.vkec2.agent.plist" in script
    assert 'chown root:wheel "${PLIST}"' in script and "launchctl bootstrap system" in script
    assert "@@" not in script
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_an_install_dir_with_xml_characters_is_escaped_in_the_plist() -> None:
    plist = _plist(_render(install_dir="/opt/a&b"))
    arguments = plist["ProgramArguments"]
    assert isinstance(arguments, list) and arguments[0] == "/opt/a&b/venv/bin/python"
