"""User-data templates that put the agent on a new EC2 instance (Linux: systemd; macOS: launchd).

The fleet renders one into the RunInstances ``UserData``: it fetches the agent artifact (a tarball
of the ``agent/`` package, optionally with a ``wheels/`` directory for offline installs) from S3
with the instance role, creates a virtual environment with grpcio, grpcio-health-checking and
protobuf, and installs a service that runs ``python -m agent`` on the configured port.
"""

from __future__ import annotations

import shlex
from importlib import resources
from string import Template

TEMPLATES = {"linux": "linux.sh.tmpl", "darwin": "macos.sh.tmpl"}


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
) -> str:
    """The bash user-data script for ``os_name`` (``linux`` or ``darwin``)."""
    if os_name not in TEMPLATES:
        raise ValueError(f"no user-data template for OS {os_name!r} (known: {', '.join(TEMPLATES)})")
    if not s3_bucket or not s3_key:
        raise ValueError("the agent artifact needs an S3 bucket and key (bootstrap.s3_bucket / s3_key)")
    text = resources.files(__package__).joinpath(TEMPLATES[os_name]).read_text()
    args = [f"--listen={listen_host}:{port}", *(extra_args or [])]
    return _Template(text).substitute(
        S3_URI=shlex.quote(f"s3://{s3_bucket}/{s3_key}"),
        REGION=shlex.quote(region),
        PORT=str(int(port)),
        INSTALL_DIR=shlex.quote(install_dir),
        AGENT_ARGS=" ".join(shlex.quote(a) for a in args),
        AGENT_ARGS_XML="\n".join(f"    <string>{_xml(a)}</string>" for a in args),
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
