"""User-data templates that put the agent on a new EC2 instance (Linux: systemd; macOS: launchd).

The fleet renders one into the RunInstances ``UserData``: it finds a Python >= 3.10, fetches the
agent from S3 with the instance role and installs a service that runs it on the configured port.
With ``artifacts`` (the pinned, self-contained artifact of ``make agent-artifact``, by platform:
S3 URI and sha256) the script picks the machine's platform, refuses a download whose sha256
differs, imports the agent once and installs nothing from the internet; without it (legacy) it
fetches a tarball of ``agent/`` and pip installs grpcio, grpcio-health-checking and protobuf into a
venv. Any failure prints ``VKEC2-AGENT-INSTALL-FAILED: <reason>`` (also to the console, which the
fleet reads) and stops. With a
fleet CA and a bootstrap secret (a TLS fleet), the script first writes both into the agent's state
directory (mode 0600) and the agent pins that CA and proves that secret at its bootstrap; without
an installer (an AMI with the agent baked in, or the simulator) :func:`trust_user_data` renders
that part alone. :func:`parse_trust` reads it back (the simulator's way to learn what a virtual
instance was launched with).
"""

from __future__ import annotations

import re
import shlex
from importlib import resources
from string import Template

from agent.bootstrap import check_secret

#: The line an install failure prints on the instance's console (vkec2.fleet.installcheck reads it).
INSTALL_FAILED_MARKER = "VKEC2-AGENT-INSTALL-FAILED"
#: ``uname -m`` patterns -> artifact platform, per OS.
_MACHINES = {
    "linux": (("x86_64|amd64", "linux-x86_64"), ("aarch64|arm64", "linux-aarch64")),
    "darwin": (("arm64", "macos-arm64"),),
}
TEMPLATES = {"linux": "linux.sh.tmpl", "darwin": "macos.sh.tmpl"}
STATE_DIRS = {"linux": "/var/lib/vkec2-agent", "darwin": "/var/db/vkec2-agent"}
CA_FILE = "fleet-ca.pem"
SECRET_FILE = "bootstrap-secret"
_CA_BLOCK = re.compile(
    r"<<'VKEC2_FLEET_CA'\n(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n)"
    r"VKEC2_FLEET_CA\n"
)
_SECRET_LINE = re.compile(r"^VKEC2_BOOTSTRAP_SECRET=([0-9a-f]+)$", re.MULTILINE)


def _trust_block(fleet_ca_pem: str, bootstrap_secret: str) -> str:
    """Shell lines writing the pinned CA and the secret into ``${STATE_DIR}`` (which must exist)."""
    if not fleet_ca_pem:
        return ""
    pem = fleet_ca_pem.strip() + "\n"
    if not _CA_BLOCK.search(f"<<'VKEC2_FLEET_CA'\n{pem}VKEC2_FLEET_CA\n"):
        raise ValueError("the fleet CA must be one PEM certificate")
    secret = check_secret(bootstrap_secret)
    return (
        "umask 077\n"
        f"cat > \"${{STATE_DIR}}/{CA_FILE}\" <<'VKEC2_FLEET_CA'\n{pem}VKEC2_FLEET_CA\n"
        f"VKEC2_BOOTSTRAP_SECRET={secret}\n"
        f'printf \'%s\\n\' "${{VKEC2_BOOTSTRAP_SECRET}}" > "${{STATE_DIR}}/{SECRET_FILE}"\n'
        "umask 022\n"
    )


def _trust_args(os_name: str, fleet_ca_pem: str) -> list[str]:
    if not fleet_ca_pem:
        return []
    state = STATE_DIRS[os_name]
    return [f"--fleet-ca-file={state}/{CA_FILE}", f"--bootstrap-secret-file={state}/{SECRET_FILE}"]


def trust_user_data(os_name: str, *, fleet_ca_pem: str, bootstrap_secret: str) -> str:
    """User data that only writes the bootstrap trust, for an AMI whose agent is already installed.

    That agent must run with ``--fleet-ca-file`` and ``--bootstrap-secret-file`` pointing at the
    files written here (see docs/security.md).
    """
    if os_name not in STATE_DIRS:
        raise ValueError(f"no user-data template for OS {os_name!r} (known: {', '.join(STATE_DIRS)})")
    return (
        "#!/bin/bash\n# vkec2 agent bootstrap trust (rendered by agent/userdata).\nset -euo pipefail\n"
        f"STATE_DIR={STATE_DIRS[os_name]}\n"
        'mkdir -p "${STATE_DIR}"\nchmod 700 "${STATE_DIR}"\n' + _trust_block(fleet_ca_pem, bootstrap_secret)
    )


def parse_trust(user_data: str) -> tuple[str, str] | None:
    """The fleet CA PEM and bootstrap secret rendered into ``user_data``, or None when it has none."""
    ca, secret = _CA_BLOCK.search(user_data), _SECRET_LINE.search(user_data)
    if ca is None or secret is None:
        return None
    return ca.group(1), secret.group(1)


class _Template(Template):
    """``@@{NAME}`` placeholders, so the scripts' own ``$`` needs no escaping."""

    delimiter = "@@"


def render_user_data(
    os_name: str,
    *,
    s3_bucket: str,
    s3_key: str,
    port: int = 8200,
    region: str = "",
    listen_host: str = "0.0.0.0",
    extra_args: list[str] | None = None,
    install_dir: str = "/opt/vkec2-agent",
    fleet_ca_pem: str = "",
    bootstrap_secret: str = "",
    artifacts: dict[str, tuple[str, str]] | None = None,
) -> str:
    """The bash user-data script for ``os_name`` (``linux`` or ``darwin``).

    ``artifacts``: platform (``linux-x86_64``, ``linux-aarch64``, ``macos-arm64``) -> (S3 URI, sha256)
    of the pinned artifact; without it the legacy tarball at ``s3_bucket``/``s3_key``.
    """
    if os_name not in TEMPLATES:
        raise ValueError(f"no user-data template for OS {os_name!r} (known: {', '.join(TEMPLATES)})")
    if not artifacts and (not s3_bucket or not s3_key):
        raise ValueError("the agent artifact needs an S3 bucket and key (bootstrap.s3_bucket / s3_key)")
    text = resources.files(__package__).joinpath(TEMPLATES[os_name]).read_text()
    args = [f"--listen={listen_host}:{port}", *(extra_args or []), *_trust_args(os_name, fleet_ca_pem)]
    if artifacts:
        select = _artifact_select(os_name, artifacts)
        command = [f"{install_dir}/python", "-I", "-S", f"{install_dir}/vkec2-agent/launch.py"]
    else:
        select = f"ARTIFACT={shlex.quote(f's3://{s3_bucket}/{s3_key}')}\nARTIFACT_SHA256=''"
        command = [f"{install_dir}/venv/bin/python", "-m", "agent"]
    return _Template(text).substitute(
        ARTIFACT=select,
        AGENT_CMD=" ".join(shlex.quote(c) for c in command),
        AGENT_CMD_XML="\n".join(f"    <string>{_xml(c)}</string>" for c in command),
        REGION=shlex.quote(region),
        PORT=str(int(port)),
        INSTALL_DIR=shlex.quote(install_dir),
        INSTALL_DIR_XML=_xml(install_dir),
        STATE_DIR=shlex.quote(STATE_DIRS[os_name]),
        STATE_DIR_XML=_xml(STATE_DIRS[os_name]),
        AGENT_ARGS=" ".join(shlex.quote(a) for a in args),
        AGENT_ARGS_XML="\n".join(f"    <string>{_xml(a)}</string>" for a in args),
        TRUST=_trust_block(fleet_ca_pem, bootstrap_secret),
    )


def _artifact_select(os_name: str, artifacts: dict[str, tuple[str, str]]) -> str:
    """Shell setting ARTIFACT and ARTIFACT_SHA256 for the machine (``uname -m``), or failing."""
    lines = ['case "$(uname -m)" in']
    for pattern, plat in _MACHINES[os_name]:
        if plat in artifacts:
            uri, digest = artifacts[plat]
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"the sha256 of the {plat} agent artifact must be 64 lowercase hex digits")
            lines.append(f"  {pattern}) ARTIFACT={shlex.quote(uri)}; ARTIFACT_SHA256={digest} ;;")
    known = ", ".join(p for _, p in _MACHINES[os_name] if p in artifacts) or "none"
    lines.append(f'  *) fail "no agent artifact for machine $(uname -m) (configured: {known})" ;;')
    lines.append("esac")
    return "\n".join(lines)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
