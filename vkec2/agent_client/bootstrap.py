"""The fleet half of the agent bootstrap: what a worker checks before it signs an agent's CSR.

An agent in bootstrap mode answers the worker's fresh nonce with a CSR for a key it made itself,
its EC2 instance identity document and a proof (an HMAC, :func:`agent.bootstrap.bootstrap_proof`)
under the launch's one-time bootstrap secret, which only the fleet (it derives it from the CA key
and the launch's ClientToken, :meth:`vkec2.ca.FleetCA.bootstrap_secret`) and the instance's user
data know. :class:`FleetBootstrap` signs only when the document's signature verifies against AWS's
public certificate for the region (``agent.identity.aws_certificate_file``; the base64 RSA-SHA256
``signature`` document of IMDS), the document names the launched instance, the fleet's region
and account, and the proof matches the nonce, the CSR and the document; the certificate then
names the launched instance whatever the CSR asks. So a replayed document, a document of another
instance, a forged signature or an answer replayed from an earlier bootstrap are all refused
(:class:`~vkec2.errors.AgentBootstrapRefused`), and the agent pins the fleet CA from its user data
so nobody else can certify it either. It also gives a launch its :class:`AgentTrust` for the user
data. Threat model and tests: docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from agent.bootstrap import bootstrap_proof
from vkec2.agent_client.client import AgentClient
from vkec2.ca import FleetCA
from vkec2.config import Settings
from vkec2.domain.agents import AgentTarget, AgentTrust
from vkec2.errors import AgentBootstrapRefused, ConfigError

log = logging.getLogger("vkec2.agent_client.bootstrap")

MAX_DOCUMENT_BYTES = 16 * 1024


class IdentityVerifier:
    """Checks an instance identity document: AWS's signature, and instance, region and account."""

    def __init__(
        self,
        certificate_pem: bytes | None,
        region: str,
        account: Callable[[], str],
        *,
        skip_signature: bool = False,
    ) -> None:
        self._public: Any = None
        if certificate_pem is not None:
            try:
                self._public = x509.load_pem_x509_certificate(certificate_pem).public_key()
            except ValueError as exc:
                raise ConfigError(
                    f"agent.identity.aws_certificate_file is not a PEM certificate: {exc}"
                ) from None
        self._skip = skip_signature
        self._region = region
        self._account = account

    @classmethod
    def from_settings(cls, settings: Settings, account: Callable[[], str]) -> IdentityVerifier:
        check = settings.agent.identity
        pem = check.aws_certificate_pem.encode() if check.aws_certificate_pem else None
        if check.aws_certificate_file:
            try:
                pem = Path(check.aws_certificate_file).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"agent.identity.aws_certificate_file: cannot read {exc.filename}: {exc.strerror}"
                ) from None
        fixed = check.account_id
        return cls(
            pem,
            settings.region,
            (lambda: fixed) if fixed else account,
            skip_signature=check.insecure_skip_signature_check,
        )

    def _check_signature(self, document: str, signature: str, where: str) -> None:
        if self._public is None:
            if self._skip:
                log.warning(
                    "%s: identity document signature NOT checked (insecure_skip_signature_check)", where
                )
                return
            raise AgentBootstrapRefused(
                f"{where}: cannot verify the identity document: agent.identity.aws_certificate_file is not "
                "set (nor aws_certificate_pem: AWS's public certificate for the region)"
            )
        try:
            sig = base64.b64decode("".join(signature.split()), validate=True)
        except (binascii.Error, ValueError):
            raise AgentBootstrapRefused(f"{where}: the identity document signature is not base64") from None
        try:
            if isinstance(self._public, rsa.RSAPublicKey):
                self._public.verify(sig, document.encode(), padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(self._public, ec.EllipticCurvePublicKey):
                self._public.verify(sig, document.encode(), ec.ECDSA(hashes.SHA256()))
            else:
                raise AgentBootstrapRefused(f"{where}: the configured AWS certificate has an unusable key")
        except InvalidSignature:
            raise AgentBootstrapRefused(
                f"{where}: the identity document signature does not verify with AWS's certificate"
            ) from None

    def verify(self, document: str, signature: str, instance_id: str, where: str) -> None:
        """Raise :class:`AgentBootstrapRefused` unless the document is AWS's, for this launch."""
        if not document or len(document) > MAX_DOCUMENT_BYTES:
            raise AgentBootstrapRefused(f"{where}: the agent sent no usable instance identity document")
        self._check_signature(document, signature, where)
        try:
            doc = json.loads(document)
        except json.JSONDecodeError:
            raise AgentBootstrapRefused(f"{where}: the instance identity document is not JSON") from None
        if not isinstance(doc, dict):
            raise AgentBootstrapRefused(f"{where}: the instance identity document is not a JSON object")
        expected = {"instanceId": instance_id, "region": self._region, "accountId": self._account()}
        for key, want in expected.items():
            got = doc.get(key)
            if got != want:
                raise AgentBootstrapRefused(
                    f"{where}: the identity document is for {key} {got!r}, this launch is {want!r}"
                )


class FleetBootstrap:
    """A worker's bootstrap: the trust a launch renders, and the checked signing of agents' CSRs."""

    def __init__(self, client: AgentClient, ca: FleetCA, verifier: IdentityVerifier) -> None:
        self._client = client
        self._ca = ca
        self._verifier = verifier

    def trust(self, client_token: str) -> AgentTrust:
        """The fleet CA and bootstrap secret for the launch with this ClientToken (for its user data)."""
        return AgentTrust(self._ca.cert_pem.decode(), self._ca.bootstrap_secret(client_token))

    def bootstrap(self, target: AgentTarget, client_token: str) -> None:
        """Bring the agent of ``target``, launched with ``client_token``, to mTLS (no-op once there)."""
        where = f"agent of {target.instance_id} at {target.endpoint}"

        def sign(ident: Any, answer: Any, nonce: bytes) -> tuple[bytes, bytes]:
            if not client_token:
                raise AgentBootstrapRefused(f"{where}: no ClientToken is known for its launch")
            self._verifier.verify(answer.identity_document, answer.signature, target.instance_id, where)
            secret = self._ca.bootstrap_secret(client_token)
            want = bootstrap_proof(secret, nonce, bytes(answer.csr_pem), answer.identity_document)
            if not hmac.compare_digest(want, bytes(answer.proof)):
                raise AgentBootstrapRefused(
                    f"{where}: the bootstrap proof does not match (not the launch's secret, or a replay)"
                )
            try:
                cert = self._ca.sign_agent_csr(bytes(answer.csr_pem), target.instance_id)
            except ValueError as exc:
                raise AgentBootstrapRefused(f"{where}: {exc}") from None
            log.info("%s: certificate signed after identity, signature and proof checks", where)
            return cert, b""

        self._client.bootstrap(target, sign)
