"""The simulator's TLS bootstrap: every virtual agent goes through the real agent's bootstrap.

With ``--tls-cert``/``--tls-key``/``--tls-client-ca`` the simulator listens with TLS, requires
client certificates of the fleet CA, and presents one certificate for ``*.agent.vkec2`` (issued by
the test harness from the fleet CA: a single listener cannot present one certificate per virtual
instance). Behind it each virtual agent keeps the real agent's rules: it starts in bootstrap mode
and refuses lifecycle calls (UNIMPLEMENTED, as the real agent does not serve them) until the fleet
has signed its CSR; it reads the fleet CA it pins and its bootstrap secret from its instance's user
data at the EC2 endpoint (:func:`agent.userdata.parse_trust`); it makes its own key and CSR
(:mod:`agent.pki`), proves the secret over the fleet's nonce, and accepts only a certificate that
chains to the pinned CA, names the instance and fits the key. Its identity document is signed with
the test key of ``--identity-key`` (:mod:`agent.sim.identity`), standing in for AWS's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from agent.bootstrap import CertificateRequest, Identity, bootstrap_proof
from agent.pki import KeyAndCsr, PkiError, check_issued, new_key_and_csr
from agent.sim.identity import TEST_ACCOUNT, DocumentSigner
from agent.userdata import parse_trust


class SimBootstrap:
    """Bootstrap state of every virtual agent of a TLS simulator."""

    def __init__(
        self,
        signer: DocumentSigner,
        region: str,
        user_data: Callable[[str], str],
        account: str = TEST_ACCOUNT,
    ) -> None:
        self._signer = signer
        self._region = region
        self._user_data = user_data
        self._account = account
        self._pending: dict[str, KeyAndCsr] = {}
        self._documents: dict[str, tuple[str, str]] = {}
        self._authenticated: set[str] = set()
        self._lock = threading.Lock()

    def mode(self, instance_id: str) -> str:
        return "authenticated" if instance_id in self._authenticated else "bootstrap"

    def identity(self, instance_id: str) -> Identity:
        with self._lock:
            if instance_id not in self._documents:
                doc = self._signer.document(instance_id, self._region, self._account)
                self._documents[instance_id] = (doc, self._signer.sign(doc))
            doc, sig = self._documents[instance_id]
        return Identity(instance_id, region=self._region, document=doc, signature=sig, source="simulator")

    def require_authenticated(self, instance_id: str, context: grpc.ServicerContext) -> None:
        if instance_id not in self._authenticated:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"simulated agent of {instance_id} is in bootstrap mode: the lifecycle API is not served",
            )

    def _trust(self, instance_id: str, context: grpc.ServicerContext) -> tuple[bytes, str]:
        try:
            trust = parse_trust(self._user_data(instance_id))
        except Exception as exc:  # the EC2 endpoint's failure, whatever its type
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read the user data of {instance_id}: {exc}")
        if trust is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"instance {instance_id} was launched without a fleet CA and bootstrap secret "
                "in its user data",
            )
        assert trust is not None
        return trust[0].encode(), trust[1]

    def _refuse_unless_bootstrapping(self, instance_id: str, context: grpc.ServicerContext) -> None:
        if instance_id in self._authenticated:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "already authenticated: LaunchAuthenticatedEndpoint is one-shot",
            )

    def certificate_request(
        self, instance_id: str, nonce: bytes, context: grpc.ServicerContext
    ) -> CertificateRequest:
        self._refuse_unless_bootstrapping(instance_id, context)
        _, secret = self._trust(instance_id, context)
        with self._lock:
            keys = self._pending.get(instance_id)
        if keys is None:
            try:
                keys = new_key_and_csr(instance_id)
            except PkiError as exc:
                context.abort(grpc.StatusCode.INTERNAL, str(exc))
            with self._lock:
                keys = self._pending.setdefault(instance_id, keys)
        ident = self.identity(instance_id)
        proof = bootstrap_proof(secret, nonce, keys.csr_pem, ident.document)
        return CertificateRequest(keys.csr_pem, ident.document, ident.signature, proof)

    def install_certificate(
        self, instance_id: str, cert_pem: bytes, chain_pem: bytes, context: grpc.ServicerContext
    ) -> str:
        self._refuse_unless_bootstrapping(instance_id, context)
        ca_pem, _ = self._trust(instance_id, context)
        with self._lock:
            keys = self._pending.get(instance_id)
        if keys is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "no certificate request is pending: call CreateCertificateRequest first",
            )
        assert keys is not None
        try:
            check_issued(cert_pem, chain_pem, keys.key_pem, ca_pem, instance_id)
        except PkiError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        with self._lock:
            self._authenticated.add(instance_id)
            self._pending.pop(instance_id, None)
        return "authenticated"

    def forget(self, gone: list[str]) -> None:
        with self._lock:
            for iid in gone:
                self._authenticated.discard(iid)
                self._pending.pop(iid, None)
                self._documents.pop(iid, None)
