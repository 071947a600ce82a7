"""The fleet's trust for agent tests: a fleet CA, a stand-in for AWS's identity-document key, files.

:class:`BootstrapKit` writes what an instance's user data and IMDS would give an agent (the pinned
fleet CA, the launch's bootstrap secret, a signed identity document) and builds the worker side
(:class:`~vkec2.agent_client.bootstrap.FleetBootstrap`) that checks them, so agent tests run the
real bootstrap end to end; :meth:`BootstrapKit.start_tls_sim` starts the agent simulator serving
mTLS and gives the ``agent`` settings of a fleet that bootstraps its virtual agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sim.identity import TEST_ACCOUNT, DocumentSigner
from tests.support.services import ManagedProcess, start_agent_sim
from vkec2.agent_client.bootstrap import FleetBootstrap, IdentityVerifier
from vkec2.agent_client.client import AgentClient
from vkec2.ca import FleetCA

REGION = "us-west-2"


@dataclass
class BootstrapKit:
    directory: Path
    ca: FleetCA = field(default_factory=FleetCA.create)
    signer: DocumentSigner = field(default_factory=DocumentSigner.create)

    def files(self, instance_id: str, token: str = "token-1", region: str = REGION) -> dict[str, Path]:
        """Trust and identity files of ``instance_id`` launched with ClientToken ``token``."""
        d = self.directory / f"trust-{instance_id}-{token}"
        d.mkdir(parents=True, exist_ok=True)
        ca, secret = d / "fleet-ca.pem", d / "bootstrap-secret"
        ca.write_bytes(self.ca.cert_pem)
        secret.write_text(self.ca.bootstrap_secret(token) + "\n")
        ident = self.signer.write_identity_file(d / "identity.json", instance_id, region)
        return {"ca": ca, "secret": secret, "identity": ident}

    def agent_args(self, instance_id: str, token: str = "token-1", region: str = REGION) -> list[str]:
        """``vkec2 agent`` flags for a bootstrappable agent of ``instance_id`` (no --instance-id)."""
        f = self.files(instance_id, token, region)
        return [
            "--identity-file",
            str(f["identity"]),
            "--fleet-ca-file",
            str(f["ca"]),
            "--bootstrap-secret-file",
            str(f["secret"]),
        ]

    def verifier(self, region: str = REGION, account: str = TEST_ACCOUNT) -> IdentityVerifier:
        return IdentityVerifier(self.signer.cert_pem, region, lambda: account)

    def fleet(self, client: AgentClient, region: str = REGION) -> FleetBootstrap:
        return FleetBootstrap(client, self.ca, self.verifier(region))

    def start_tls_sim(self, moto_url: str) -> tuple[ManagedProcess, str, dict[str, Any]]:
        """The agent simulator serving mTLS only (one ``*`` certificate of the fleet CA for every
        virtual agent), identity documents signed by the kit; (process, endpoint, ``agent`` settings)."""
        d = self.directory
        files = {
            name: d / name for name in ("ca.crt", "ca.key", "aws.pem", "identity.key", "sim.crt", "sim.key")
        }
        self.ca.save(files["ca.crt"], files["ca.key"])
        files["aws.pem"].write_bytes(self.signer.cert_pem)
        self.signer.save_key(files["identity.key"])
        sim_cert = self.ca.issue_agent_server_cert("*")
        files["sim.crt"].write_bytes(sim_cert.cert_pem)
        files["sim.key"].write_bytes(sim_cert.key_pem)
        proc, endpoint = start_agent_sim(
            moto_url,
            extra_args=[
                "--tls-cert", str(files["sim.crt"]),
                "--tls-key", str(files["sim.key"]),
                "--tls-client-ca", str(files["ca.crt"]),
                "--identity-key", str(files["identity.key"]),
            ],
        )  # fmt: skip
        agent = {
            "tls": {"ca_cert_file": str(files["ca.crt"]), "ca_key_file": str(files["ca.key"])},
            "identity": {"aws_certificate_file": str(files["aws.pem"])},
        }
        return proc, endpoint, agent
