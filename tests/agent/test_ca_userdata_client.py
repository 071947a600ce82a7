"""Fleet CA certificates, user-data rendering, endpoint resolution and client error mapping."""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.userdata import render_user_data
from tests.agent.conftest import InProcessAgent, fast_conn
from tests.support.services import free_port
from vkec2.agent_client.client import AgentClient
from vkec2.ca import ClientTls, FleetCA, agent_server_name
from vkec2.config import AgentConnection, AgentTls
from vkec2.domain.agents import AgentTarget, resolve_endpoint
from vkec2.errors import AgentUnavailable, ConfigError


def test_ca_issues_server_and_client_certs(tmp_path: Path) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
    again = FleetCA.load_or_create(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert again.cert_pem == ca.cert_pem

    server = x509.load_pem_x509_certificate(ca.issue_agent_server_cert("i-abc", ips=["10.0.0.1"]).cert_pem)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [agent_server_name("i-abc")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    server.verify_directly_issued_by(ca.cert)

    client = x509.load_pem_x509_certificate(ca.issue_worker_client_cert("worker-1").cert_pem)
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    client.verify_directly_issued_by(ca.cert)


def test_client_tls_from_config(tmp_path: Path) -> None:
    ca = FleetCA.create()
    ca.save(tmp_path / "ca.crt", tmp_path / "ca.key")
    issued = ca.issue_worker_client_cert()
    (tmp_path / "w.crt").write_bytes(issued.cert_pem)
    (tmp_path / "w.key").write_bytes(issued.key_pem)
    files = ClientTls.from_config(
        AgentTls(
            ca_cert_file=str(tmp_path / "ca.crt"),
            client_cert_file=str(tmp_path / "w.crt"),
            client_key_file=str(tmp_path / "w.key"),
        )
    )
    assert files.cert_pem == issued.cert_pem
    minted = ClientTls.from_config(
        AgentTls(ca_cert_file=str(tmp_path / "ca.crt"), ca_key_file=str(tmp_path / "ca.key"))
    )
    assert minted.ca_cert_pem == ca.cert_pem and b"CERTIFICATE" in minted.cert_pem
    with pytest.raises(ConfigError, match="client_cert_file"):
        ClientTls.from_config(AgentTls(ca_cert_file=str(tmp_path / "ca.crt")))
    with pytest.raises(ConfigError, match="cannot read"):
        ClientTls.from_config(AgentTls(ca_cert_file=str(tmp_path / "missing.crt")))


@pytest.mark.parametrize("os_name", ["linux", "darwin"])
def test_user_data_renders_valid_bash(os_name: str, tmp_path: Path) -> None:
    script = render_user_data(
        os_name,
        s3_bucket="vkec2-artifacts",
        s3_key="agent/agent-0.1.0.tar.gz",
        port=8300,
        region="us-west-2",
        extra_args=["--log-level=DEBUG"],
    )
    assert "s3://vkec2-artifacts/agent/agent-0.1.0.tar.gz" in script
    assert "--listen=0.0.0.0:8300" in script and "--log-level=DEBUG" in script
    assert "grpcio grpcio-health-checking protobuf" in script
    assert "@@" not in script
    if os_name == "linux":
        assert "systemctl enable --now vkec2-agent.service" in script
    else:
        assert "launchctl bootstrap system" in script and "<string>--listen=0.0.0.0:8300</string>" in script
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    with pytest.raises(ValueError, match="S3 bucket"):
        render_user_data(os_name, s3_bucket="", s3_key="k")


def test_resolve_endpoint() -> None:
    inst = {"InstanceId": "i-1", "PrivateIpAddress": "10.0.0.5", "PublicIpAddress": "54.1.2.3"}
    assert resolve_endpoint(AgentConnection(port=8200), inst) == "10.0.0.5:8200"
    assert resolve_endpoint(AgentConnection(port=9000, endpoint="public-ip"), inst) == "54.1.2.3:9000"
    assert resolve_endpoint(AgentConnection(endpoint="static:127.0.0.1:7001"), inst) == "127.0.0.1:7001"
    with pytest.raises(AgentUnavailable, match="PublicIpAddress"):
        resolve_endpoint(AgentConnection(endpoint="public-ip"), {"InstanceId": "i-1"})


def test_unreachable_agent_is_unavailable() -> None:
    port = free_port()  # nothing listens there
    client = AgentClient(fast_conn(port, call_timeout_seconds=2.0))
    t = AgentTarget(f"127.0.0.1:{port}", "i-none")
    assert not client.serving(t)
    with pytest.raises(AgentUnavailable, match="UNAVAILABLE"):
        client.status(t)
    with pytest.raises(AgentUnavailable):
        client.identity(t)
    client.close()


def _child_status(client: AgentClient, target: AgentTarget, out: multiprocessing.Queue[str]) -> None:
    out.put(client.status(target).reason)


def test_client_works_after_fork(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    assert a.client.status(a.target).reason == "NotLaunched"  # parent has a channel now
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_child_status, args=(a.client, a.target, out))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert out.get(timeout=5) == "NotLaunched"
    assert a.client.status(a.target).reason == "NotLaunched"
