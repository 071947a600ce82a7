"""Bootstrap and mTLS against a real agent process: CSR signed after checks, one-shot switch, refused clients.

The attacks on the bootstrap itself (foreign CA, replayed or foreign documents, bad signatures) are
in tests/security/test_bootstrap_attacks.py.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.bootstrap import identity_from_file, identity_from_imds
from agent.v1 import agent_pb2
from tests.agent.conftest import ROOT, AgentProcess, agent_grpc, fast_conn, pod, sh
from tests.support.bootstrap import BootstrapKit
from tests.support.services import free_port, wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.ca import ClientTls, FleetCA, agent_server_name
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentIdentityMismatch, AgentRejected, AgentUnavailable

IID = "i-0aaaaaaaaaaaaaaaa"


def _health(channel: grpc.Channel, timeout: float = 3) -> int:
    resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return int(resp.status)


def _tls_channel(endpoint: str, ca_pem: bytes, client: ClientTls | None, name: str) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        ca_pem, client.key_pem if client else None, client.cert_pem if client else None
    )
    return grpc.secure_channel(endpoint, creds, options=[("grpc.ssl_target_name_override", name)])


@pytest.fixture
def kit(tmp_path: Path) -> BootstrapKit:
    return BootstrapKit(tmp_path)


@pytest.fixture
def ca(kit: BootstrapKit) -> FleetCA:
    return kit.ca


def test_bootstrap_then_mtls_only(
    start_agent: Callable[..., AgentProcess], tmp_path: Path, kit: BootstrapKit, ca: FleetCA
) -> None:
    state = tmp_path / "state"
    args = kit.agent_args(IID)
    agent = start_agent("--state-dir", str(state), *args, instance_id=IID, fixed_id=False)
    plain = grpc.insecure_channel(agent.endpoint)
    md = (("x-vkec2-instance-id", IID),)

    # Before bootstrap: plaintext health and bootstrap only; the lifecycle API is not served.
    assert _health(plain) == health_pb2.HealthCheckResponse.SERVING
    ident = agent_grpc.AgentBootstrapStub(plain).GetAgentIdentity(
        agent_pb2.GetAgentIdentityRequest(), timeout=3
    )
    assert (ident.instance_id, ident.mode, ident.source) == (IID, "bootstrap", "file")
    with pytest.raises(grpc.RpcError) as info:
        agent_grpc.ApplicationLifecycleStub(plain).CheckApplicationHealth(
            agent_pb2.CheckApplicationHealthRequest(), metadata=md, timeout=3
        )
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    client = AgentClient(fast_conn(agent.port), tls=ca.client_tls())
    boot = kit.fleet(client)
    assert client.serving(agent.target)  # plaintext fallback before bootstrap
    assert client.identity(agent.target) == IID

    # The fleet launched another instance: the agent at this address is not it.
    with pytest.raises(AgentIdentityMismatch):
        boot.bootstrap(AgentTarget(agent.endpoint, "i-0bbbbbbbbbbbbbbbb"), "token-1")
    issued = ca.issue_agent_server_cert(IID)
    with pytest.raises(grpc.RpcError) as info:
        agent_grpc.AgentBootstrapStub(plain).LaunchAuthenticatedEndpoint(
            agent_pb2.LaunchAuthenticatedEndpointRequest(server_cert_pem=issued.cert_pem),
            metadata=(("x-vkec2-instance-id", "i-0bbbbbbbbbbbbbbbb"),),
            timeout=3,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "mismatch" in (info.value.details() or "")

    boot.bootstrap(agent.target, "token-1")
    boot.bootstrap(agent.target, "token-1")  # no-op once authenticated
    assert not (Path(args[5])).exists()  # the one-time secret is gone once the material is saved
    assert client.identity(agent.target) == IID
    client.launch(agent.target, pod(sh("main", "sleep 1000")))
    wait_until(lambda: client.status(agent.target).phase == "Running", 10, "running over mTLS")

    # Plaintext is refused now.
    plain2 = grpc.insecure_channel(agent.endpoint)
    with pytest.raises(grpc.RpcError) as info:
        _health(plain2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    # TLS without a client certificate: refused.
    with pytest.raises(grpc.RpcError):
        _health(_tls_channel(agent.endpoint, ca.cert_pem, None, agent_server_name(IID)))
    # A client certificate from another CA: refused.
    other = FleetCA.create("someone else")
    with pytest.raises(grpc.RpcError):
        _health(_tls_channel(agent.endpoint, ca.cert_pem, other.client_tls(), agent_server_name(IID)))
    # A worker expecting another instance rejects this agent's certificate.
    with pytest.raises(grpc.RpcError):
        _health(_tls_channel(agent.endpoint, ca.cert_pem, ca.client_tls(), agent_server_name("i-other")))
    # The fleet's own certificates work.
    assert _health(_tls_channel(agent.endpoint, ca.cert_pem, ca.client_tls(), agent_server_name(IID))) == 1

    # mTLS does not replace the instance-ID check.
    wrong = AgentTarget(agent.endpoint, "i-0bbbbbbbbbbbbbbbb")
    tls_for_wrong = AgentClient(fast_conn(agent.port), tls=ca.client_tls())
    with pytest.raises(AgentUnavailable):  # the certificate names IID, not i-0bbb...
        tls_for_wrong.status(wrong)
    secure = _tls_channel(agent.endpoint, ca.cert_pem, ca.client_tls(), agent_server_name(IID))
    with pytest.raises(grpc.RpcError) as info:
        agent_grpc.ApplicationLifecycleStub(secure).CheckApplicationHealth(
            agent_pb2.CheckApplicationHealthRequest(), metadata=(("x-vkec2-instance-id", "i-x"),), timeout=3
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # One shot: a second LaunchAuthenticatedEndpoint is refused.
    with pytest.raises(grpc.RpcError) as info:
        agent_grpc.AgentBootstrapStub(secure).LaunchAuthenticatedEndpoint(
            agent_pb2.LaunchAuthenticatedEndpointRequest(server_cert_pem=issued.cert_pem),
            metadata=md,
            timeout=3,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "one-shot" in (info.value.details() or "")

    # The material survives a restart of the agent (state dir): it comes back authenticated.
    assert sorted(p.name for p in state.iterdir()) >= ["ca.crt", "server.crt", "server.key"]
    assert (state / "server.key").stat().st_mode & 0o077 == 0
    client.terminate(agent.target, 2)
    agent.stop()
    restarted = start_agent("--state-dir", str(state), *args, instance_id=IID, fixed_id=False)
    fresh = AgentClient(fast_conn(restarted.port), tls=ca.client_tls())
    target = restarted.target
    ident2, secure_used = fresh._identity(target)
    assert ident2.mode == "authenticated" and secure_used
    client.close()
    fresh.close()
    tls_for_wrong.close()


def test_insecure_agent_and_tls_fleet_do_not_mix(
    start_agent: Callable[..., AgentProcess], ca: FleetCA, kit: BootstrapKit
) -> None:
    agent = start_agent("--insecure", instance_id=IID)
    client = AgentClient(fast_conn(agent.port), tls=ca.client_tls())
    with pytest.raises(AgentRejected, match="--insecure"):
        kit.fleet(client).bootstrap(agent.target, "token-1")
    plain = AgentClient(fast_conn(agent.port))
    kit.fleet(plain).bootstrap(agent.target, "token-1")  # identity verified; nothing to switch
    client.close()
    plain.close()


def test_plaintext_client_cannot_bootstrap(
    start_agent: Callable[..., AgentProcess], kit: BootstrapKit
) -> None:
    agent = start_agent(instance_id=IID)
    plain = AgentClient(fast_conn(agent.port))
    with pytest.raises(AgentRejected, match="no TLS configuration"):
        kit.fleet(plain).bootstrap(agent.target, "token-1")
    with pytest.raises(AgentRejected):  # lifecycle API not served before bootstrap
        plain.status(agent.target)
    plain.close()


# ------------------------------------------------------------------------------------------------
# Identity sources (never 169.254.169.254 in tests)

DOC = {"instanceId": IID, "region": "us-west-2", "availabilityZone": "us-west-2a", "privateIp": "10.0.0.9"}


def test_identity_from_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    path.write_text(json.dumps(DOC))
    (tmp_path / "identity.json.sig").write_text("c2lnbmF0dXJl\n")
    ident = identity_from_file(str(path))
    assert (ident.instance_id, ident.region, ident.private_ip, ident.signature, ident.source) == (
        IID,
        "us-west-2",
        "10.0.0.9",
        "c2lnbmF0dXJl",
        "file",
    )


@pytest.fixture
def fake_imds() -> Iterator[str]:
    """A local stand-in for IMDSv2 (token PUT, then the identity document and signature)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            assert self.path == "/latest/api/token"
            assert self.headers["X-aws-ec2-metadata-token-ttl-seconds"]
            self._send(b"token-123")

        def do_GET(self) -> None:
            if self.headers.get("X-aws-ec2-metadata-token") != "token-123":
                self.send_response(401)
                self.end_headers()
                return
            body = {
                "/latest/dynamic/instance-identity/document": json.dumps(DOC).encode(),
                "/latest/dynamic/instance-identity/signature": b"sig==",
            }.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self._send(body)

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_identity_from_imds_v2(fake_imds: str) -> None:
    ident = identity_from_imds(fake_imds)
    assert (ident.instance_id, ident.signature, ident.source) == (IID, "sig==", "imds")
    assert json.loads(ident.document) == DOC


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"ca": b"not a certificate", "secret": "ab" * 32}, "is not a PEM certificate"),
        ({"ca": None, "secret": "not hex"}, "32 to 128 lowercase hex digits"),
        ({"ca": None, "secret": None}, "go together"),
    ],
)
def test_the_agent_refuses_to_start_with_bad_bootstrap_trust(
    tmp_path: Path, kit: BootstrapKit, files: dict[str, object], words: str
) -> None:
    ca, secret = tmp_path / "ca.pem", tmp_path / "secret"
    ca.write_bytes(files["ca"] if isinstance(files["ca"], bytes) else kit.ca.cert_pem)
    args = ["--fleet-ca-file", str(ca)]
    if files["secret"] is not None:
        secret.write_text(str(files["secret"]))
        args += ["--bootstrap-secret-file", str(secret)]
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--listen", "127.0.0.1:0", "--instance-id", IID, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert done.returncode == 1 and words in done.stderr, done.stderr
