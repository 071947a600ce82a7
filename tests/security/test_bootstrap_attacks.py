"""Attacks on the agent bootstrap, each of which must be refused (docs/security.md, "Agent bootstrap").

Two sides are attacked. The agent (a real :class:`~agent.server.AgentServer` in bootstrap mode,
in this process) is offered certificates by someone who is not the fleet: one of a foreign CA, one
of the fleet CA for another instance or another key; it keeps refusing, stays in bootstrap mode and
never serves its lifecycle API in plaintext, then the real fleet still bootstraps it. The fleet
(:class:`~vkec2.agent_client.bootstrap.FleetBootstrap`) is answered by a forged agent that replays a
genuine identity document without the launch's secret, replays a whole earlier answer, sends a
document of another instance, region or account, or a document whose signature is bad; it never
signs. After a bootstrap, plaintext lifecycle calls are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.bootstrap import CertificateRequest, Identity, Trust, bootstrap_proof, identity_from_document
from agent.host import Instance, check_instance_id
from agent.pki import new_key_and_csr
from agent.server import AgentServer
from agent.service import make_server
from agent.sim.identity import TEST_ACCOUNT, DocumentSigner
from agent.sim.runtime import SimOutcome, SimRuntime
from agent.v1 import agent_pb2
from agent.v1 import agent_pb2_grpc as _agent_grpc
from tests.support.bootstrap import REGION, BootstrapKit
from vkec2.agent_client.bootstrap import IdentityVerifier
from vkec2.agent_client.client import AgentClient
from vkec2.ca import FleetCA
from vkec2.config import AgentConnection, Backoff
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentBootstrapRefused, AgentError, AgentIdentityMismatch, AgentRejected

agent_grpc: Any = _agent_grpc
IID = "i-0aaaaaaaaaaaaaaaa"
OTHER = "i-0bbbbbbbbbbbbbbbb"
TOKEN = "launch-token-1"


def conn(port: int) -> AgentConnection:
    return AgentConnection(
        port=port,
        endpoint=f"static:127.0.0.1:{port}",
        call_timeout_seconds=5,
        connect_timeout_seconds=0.5,
        backoff=Backoff(base_delay_seconds=0.1, max_delay_seconds=0.5),
    )


@pytest.fixture
def kit(tmp_path: Path) -> BootstrapKit:
    return BootstrapKit(tmp_path)


@pytest.fixture
def agent(kit: BootstrapKit) -> Iterator[AgentServer]:
    """A real agent in bootstrap mode, launched with TOKEN: pinned fleet CA, secret, signed document."""
    ident = kit.signer.identity(IID)
    server = AgentServer(
        "127.0.0.1:0",
        identity_from_document(ident["document"], ident["signature"], "file"),
        SimRuntime(SimOutcome(), pod_ip="127.0.0.1"),
        trust=Trust(kit.ca.cert_pem, kit.ca.bootstrap_secret(TOKEN)),
    )
    server.start()
    yield server
    server.stop(0.2)


def md(iid: str = IID) -> tuple[tuple[str, str], ...]:
    return (("x-vkec2-instance-id", iid),)


def attacker_csr(channel: grpc.Channel) -> bytes:
    """What anyone who reaches a bootstrapping agent can get: its CSR (public, harmless)."""
    answer = agent_grpc.AgentBootstrapStub(channel).CreateCertificateRequest(
        agent_pb2.CreateCertificateRequestRequest(nonce=os.urandom(32)), metadata=md(), timeout=10
    )
    return bytes(answer.csr_pem)


def install(channel: grpc.Channel, cert_pem: bytes, chain: bytes = b"") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        agent_grpc.AgentBootstrapStub(channel).LaunchAuthenticatedEndpoint(
            agent_pb2.LaunchAuthenticatedEndpointRequest(server_cert_pem=cert_pem, ca_chain_pem=chain),
            metadata=md(),
            timeout=10,
        )
    return info.value


def mode(channel: grpc.Channel) -> str:
    ident = agent_grpc.AgentBootstrapStub(channel).GetAgentIdentity(
        agent_pb2.GetAgentIdentityRequest(), timeout=5
    )
    return str(ident.mode)


def assert_lifecycle_refused_in_plaintext(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        agent_grpc.ApplicationLifecycleStub(channel).LaunchApplication(
            agent_pb2.LaunchApplicationRequest(pod_json=json.dumps({"metadata": {"uid": "x"}})),
            metadata=md(),
            timeout=5,
        )
    code: grpc.StatusCode = info.value.code()
    assert code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE)
    return code


# ------------------------------------------------------------------------------------------------
# The agent refuses certificates that are not the fleet's, for it, for its key


def test_agent_refuses_a_certificate_of_a_foreign_ca(agent: AgentServer, kit: BootstrapKit) -> None:
    plain = grpc.insecure_channel(agent.address)
    csr = attacker_csr(plain)
    foreign = FleetCA.create("attacker CA")  # signs the agent's own key and names it correctly
    err = install(plain, foreign.sign_agent_csr(csr, IID))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "pinned fleet CA" in (err.details() or "")
    # ... even when the attacker sends its CA along as a chain: only the pinned CA is a root.
    err = install(plain, foreign.sign_agent_csr(csr, IID), foreign.cert_pem)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert mode(plain) == "bootstrap"
    assert assert_lifecycle_refused_in_plaintext(plain) == grpc.StatusCode.UNIMPLEMENTED
    # The real fleet can still bootstrap the agent afterwards.
    client = AgentClient(conn(agent.port), tls=kit.ca.client_tls())
    kit.fleet(client).bootstrap(AgentTarget(agent.address, IID), TOKEN)
    assert agent.switched.wait(10) and agent.mode() == "authenticated"
    client.close()
    plain.close()


def test_agent_refuses_a_fleet_certificate_for_another_instance_or_key(
    agent: AgentServer, kit: BootstrapKit
) -> None:
    plain = grpc.insecure_channel(agent.address)
    csr = attacker_csr(plain)
    err = install(plain, kit.ca.sign_agent_csr(csr, OTHER))  # the agent's key, another instance's name
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert IID in (err.details() or "")
    other_key = new_key_and_csr(IID)  # the right name, someone else's key
    err = install(plain, kit.ca.sign_agent_csr(other_key.csr_pem, IID))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "key" in (err.details() or "")
    assert mode(plain) == "bootstrap"
    plain.close()


def test_an_agent_without_pinned_trust_cannot_be_bootstrapped(kit: BootstrapKit) -> None:
    server = AgentServer("127.0.0.1:0", Identity(IID), SimRuntime(SimOutcome(), pod_ip="127.0.0.1"))
    server.start()
    try:
        client = AgentClient(conn(server.port), tls=kit.ca.client_tls())
        with pytest.raises(AgentRejected, match="no pinned fleet CA"):
            kit.fleet(client).bootstrap(AgentTarget(server.address, IID), TOKEN)
        assert server.mode() == "bootstrap"
        client.close()
    finally:
        server.stop(0.2)


def test_lifecycle_calls_in_plaintext_are_refused_after_bootstrap(
    agent: AgentServer, kit: BootstrapKit
) -> None:
    client = AgentClient(conn(agent.port), tls=kit.ca.client_tls())
    target = AgentTarget(agent.address, IID)
    kit.fleet(client).bootstrap(target, TOKEN)
    assert client.status(target).phase == ""  # mTLS works
    plain = grpc.insecure_channel(agent.address)
    assert assert_lifecycle_refused_in_plaintext(plain) == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as info:  # the bootstrap service is gone from plaintext too
        mode(plain)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # A client certificate of a foreign CA is refused by the TLS handshake.
    foreign = FleetCA.create("attacker CA").client_tls()
    intruder = AgentClient(conn(agent.port), tls=foreign)
    assert not intruder.serving(target)
    client.close()
    intruder.close()
    plain.close()


# ------------------------------------------------------------------------------------------------
# The fleet refuses to sign for a forged agent


@dataclass
class ForgedHost:
    """An impostor at the endpoint: claims ``claimed``, answers with whatever the attack needs."""

    claimed: str
    document: str
    signature: str
    secret: str = "0" * 64
    replay: CertificateRequest | None = None
    installs: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = new_key_and_csr(self.claimed)
        self.instance = Instance(self.claimed, SimRuntime(SimOutcome(), pod_ip="127.0.0.1"))

    def resolve(self, context: grpc.ServicerContext) -> Instance:
        check_instance_id(context, self.claimed)
        return self.instance

    def health_target(self, context: grpc.ServicerContext) -> Instance | None:
        return self.instance

    def identity(self, context: grpc.ServicerContext) -> Identity:
        return Identity(self.claimed, document=self.document, signature=self.signature, source="imds")

    def mode(self, context: grpc.ServicerContext | None = None) -> str:
        return "bootstrap"

    def certificate_request(self, nonce: bytes, context: grpc.ServicerContext) -> CertificateRequest:
        if self.replay is not None:
            return self.replay
        proof = bootstrap_proof(self.secret, nonce, self.keys.csr_pem, self.document)
        return CertificateRequest(self.keys.csr_pem, self.document, self.signature, proof)

    def install_certificate(self, cert_pem: bytes, chain_pem: bytes, context: grpc.ServicerContext) -> str:
        self.installs.append(cert_pem)
        return "authenticated"


@pytest.fixture
def forge(kit: BootstrapKit) -> Iterator[Any]:
    servers: list[tuple[grpc.Server, AgentClient]] = []

    def attack(host: ForgedHost, token: str = TOKEN, verifier: IdentityVerifier | None = None) -> None:
        server = make_server(futures.ThreadPoolExecutor(4), host, lifecycle=False)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        client = AgentClient(conn(port), tls=kit.ca.client_tls())
        servers.append((server, client))
        boot = kit.fleet(client)
        if verifier is not None:
            boot = type(boot)(client, kit.ca, verifier)
        boot.bootstrap(AgentTarget(f"127.0.0.1:{port}", IID), token)

    yield attack
    for server, client in servers:
        client.close()
        server.stop(0)


def genuine(
    signer: DocumentSigner, iid: str = IID, region: str = REGION, account: str = TEST_ACCOUNT
) -> dict[str, str]:
    return signer.identity(iid, region, account)


def test_fleet_refuses_a_replayed_identity_document_without_the_secret(forge: Any, kit: BootstrapKit) -> None:
    doc = genuine(kit.signer)  # a genuine, AWS-signed document of the launched instance, copied
    host = ForgedHost(IID, doc["document"], doc["signature"])  # but not the launch's secret
    with pytest.raises(AgentBootstrapRefused, match="proof does not match"):
        forge(host)
    # The secret of another launch (another ClientToken) is no better.
    host = ForgedHost(IID, doc["document"], doc["signature"], secret=kit.ca.bootstrap_secret("other-launch"))
    with pytest.raises(AgentBootstrapRefused, match="proof does not match"):
        forge(host)
    assert host.installs == []


def test_fleet_refuses_a_replayed_bootstrap_answer(forge: Any, kit: BootstrapKit) -> None:
    """An eavesdropper records a genuine agent's answer to one nonce; replayed to a new nonce it fails."""
    doc = genuine(kit.signer)
    secret = kit.ca.bootstrap_secret(TOKEN)
    keys = new_key_and_csr(IID)
    recorded = CertificateRequest(
        keys.csr_pem,
        doc["document"],
        doc["signature"],
        bootstrap_proof(secret, os.urandom(32), keys.csr_pem, doc["document"]),
    )
    host = ForgedHost(IID, doc["document"], doc["signature"], replay=recorded)
    with pytest.raises(AgentBootstrapRefused, match="replay"):
        forge(host)
    assert host.installs == []


@pytest.mark.parametrize(
    ("iid", "region", "account", "what"),
    [
        (OTHER, REGION, TEST_ACCOUNT, "instanceId"),
        (IID, "eu-west-1", TEST_ACCOUNT, "region"),
        (IID, REGION, "210987654321", "accountId"),
    ],
)
def test_fleet_refuses_a_document_for_another_instance_region_or_account(
    forge: Any, kit: BootstrapKit, iid: str, region: str, account: str, what: str
) -> None:
    doc = genuine(kit.signer, iid, region, account)  # genuinely signed, but not this launch's
    host = ForgedHost(IID, doc["document"], doc["signature"], secret=kit.ca.bootstrap_secret(TOKEN))
    with pytest.raises(AgentBootstrapRefused, match=what):
        forge(host)
    assert host.installs == []


def test_fleet_refuses_bad_signatures(forge: Any, kit: BootstrapKit) -> None:
    secret = kit.ca.bootstrap_secret(TOKEN)
    other = genuine(kit.signer, OTHER)
    tampered = other["document"].replace(OTHER, IID)  # edited to name the launched instance
    cases = {
        "tampered document": (tampered, other["signature"]),
        "signed by another key": (tampered, DocumentSigner.create().sign(tampered)),
        "no signature": (tampered, ""),
        "not base64": (tampered, "%%%"),
    }
    for name, (document, signature) in cases.items():
        host = ForgedHost(IID, document, signature, secret=secret)
        with pytest.raises(AgentBootstrapRefused, match="signature") as info:
            forge(host)
        assert host.installs == [], name
        assert "does not verify" in info.value.message or "base64" in info.value.message, name


def test_fleet_without_aws_certificate_refuses_by_default(forge: Any, kit: BootstrapKit) -> None:
    doc = genuine(kit.signer)
    host = ForgedHost(IID, doc["document"], doc["signature"], secret=kit.ca.bootstrap_secret(TOKEN))
    unconfigured = IdentityVerifier(None, REGION, lambda: TEST_ACCOUNT)
    with pytest.raises(AgentBootstrapRefused, match="aws_certificate_file is not set"):
        forge(host, verifier=unconfigured)
    assert host.installs == []


def test_forged_host_with_everything_right_is_signed(forge: Any, kit: BootstrapKit) -> None:
    """The control: the same forged host with a genuine document and the right secret is signed, so
    the refusals above are the checks at work, not a broken harness."""
    doc = genuine(kit.signer)
    host = ForgedHost(IID, doc["document"], doc["signature"], secret=kit.ca.bootstrap_secret(TOKEN))
    with pytest.raises(AgentError, match="mTLS"):  # the forged host serves no mTLS afterwards
        forge(host)
    assert len(host.installs) == 1


def test_an_agent_claiming_another_instance_is_refused_before_any_csr(forge: Any, kit: BootstrapKit) -> None:
    doc = genuine(kit.signer, OTHER)
    host = ForgedHost(OTHER, doc["document"], doc["signature"], secret=kit.ca.bootstrap_secret(TOKEN))
    with pytest.raises(AgentIdentityMismatch):
        forge(host)
    assert host.installs == []
