"""The fleet CA: the root of trust between workers and agents (mTLS), built on ``cryptography``.

Workers hold the CA (certificate + key, from ``agent.tls`` in the configuration) and a client
certificate of their own. At bootstrap a worker signs the certificate request of the agent of the
instance it launched (the agent's key never leaves the instance; the fleet chooses the name, not
the CSR) once :mod:`vkec2.agent_client.bootstrap` has verified the agent; from then on the agent
accepts only clients whose certificate this CA signed, and the worker accepts only an agent whose
certificate names that very instance (``<instance-id>.agent.vkec2``, checked through the TLS
target name), so a private IP reused by another instance is not driven by mistake. Each launch's
one-time bootstrap secret is derived from the CA key and the launch's ClientToken
(:meth:`FleetCA.bootstrap_secret`), so a re-sent RunInstances renders the same user data and no
secret needs storing. Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.bootstrap import AGENT_NAME_SUFFIX, agent_server_name
from vkec2.config import AgentTls
from vkec2.errors import ConfigError

__all__ = ["AGENT_NAME_SUFFIX", "ClientTls", "FleetCA", "IssuedCert", "agent_server_name"]

_SECRET_CONTEXT = b"vkec2 bootstrap secret v1"


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class ClientTls:
    """What a worker needs to dial agents over mTLS: the fleet CA and its own client certificate."""

    ca_cert_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_config(cls, tls: AgentTls, *, client_name: str = "vkec2-worker") -> ClientTls:
        """From ``agent.tls`` files; without client cert files, one is issued from the CA key."""
        try:
            ca_pem = Path(tls.ca_cert_file).read_bytes()
            if tls.client_cert_file and tls.client_key_file:
                return cls(
                    ca_pem, Path(tls.client_cert_file).read_bytes(), Path(tls.client_key_file).read_bytes()
                )
        except OSError as exc:
            raise ConfigError(f"agent.tls: cannot read {exc.filename}: {exc.strerror}") from None
        if not tls.ca_key_file:
            raise ConfigError(
                "agent.tls needs client_cert_file + client_key_file, or ca_key_file to issue them"
            )
        return FleetCA.load(tls.ca_cert_file, tls.ca_key_file).client_tls(client_name)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class FleetCA:
    """A self-signed CA that issues agent server certificates and worker client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    @classmethod
    def create(cls, common_name: str = "vkec2 fleet CA", valid_days: int = 3650) -> FleetCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vkec2"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> FleetCA:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("the fleet CA key must be an EC private key")
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: str | Path, key_path: str | Path) -> FleetCA:
        try:
            return cls.from_pem(Path(cert_path).read_bytes(), Path(key_path).read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"agent.tls: cannot read the fleet CA ({exc.filename}): {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ConfigError(
                f"agent.tls: the fleet CA in {cert_path} / {key_path} is invalid: {exc}"
            ) from None

    @classmethod
    def load_or_create(cls, cert_path: str | Path, key_path: str | Path) -> FleetCA:
        if Path(cert_path).exists() and Path(key_path).exists():
            return cls.load(cert_path, key_path)
        ca = cls.create()
        ca.save(cert_path, key_path)
        return ca

    def save(self, cert_path: str | Path, key_path: str | Path) -> None:
        Path(cert_path).parent.mkdir(parents=True, exist_ok=True)
        Path(key_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cert_path).write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem)

    def bootstrap_secret(self, client_token: str) -> str:
        """The one-time bootstrap secret of the launch with this ClientToken (64 hex digits).

        An HMAC of the token under a key derived from the CA's private key: the same attempt gets
        the same secret (so the same user data), and nobody without the CA key can compute it.
        """
        if not client_token:
            raise ValueError("a bootstrap secret needs the launch's ClientToken")
        key = hashlib.sha256(_SECRET_CONTEXT + self.key_pem).digest()
        return hmac.new(key, client_token.encode(), hashlib.sha256).hexdigest()

    def sign_agent_csr(self, csr_pem: bytes, instance_id: str, *, valid_days: int = 397) -> bytes:
        """A server certificate naming ``instance_id`` for the key of a CSR whose signature is valid.

        Only the CSR's public key is used (its subject and extensions are ignored). Raises
        ValueError when the CSR is unreadable, not self-signed by its key, or the key is weak.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValueError(f"the agent's CSR is not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise ValueError("the agent's CSR signature is invalid (no proof it holds the key)")
        public = csr.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            if public.curve.key_size < 256:
                raise ValueError(f"the agent's EC key is too small ({public.curve.name})")
        elif isinstance(public, rsa.RSAPublicKey):
            if public.key_size < 2048:
                raise ValueError(f"the agent's RSA key is too small ({public.key_size} bits)")
        else:
            raise ValueError("the agent's key must be EC (P-256 or larger) or RSA (2048 bits or more)")
        sans: list[x509.GeneralName] = [x509.DNSName(agent_server_name(instance_id))]
        issued = self._issue(instance_id, sans, ExtendedKeyUsageOID.SERVER_AUTH, valid_days, public)
        return issued.cert_pem

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        """The issued certificates' AKI: the CA's own SKI when it has one (a CA made elsewhere, e.g.
        by Helm's genCA, may derive it otherwise than from the key's SHA-1), else from its key."""
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _issue(
        self,
        common_name: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        valid_days: int,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None = None,
    ) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1()) if public is None else None
        subject_key = key.public_key() if key is not None else public
        assert subject_key is not None
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vkec2"),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(subject_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(subject_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=isinstance(subject_key, ec.EllipticCurvePublicKey),
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(self._authority_key_id(), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key) if key else b"")

    def issue_agent_server_cert(
        self, instance_id: str, *, ips: list[str] | None = None, valid_days: int = 397
    ) -> IssuedCert:
        """A server certificate naming one instance (plus, optionally, its IPs), with a key made here.

        Never for an agent: agents make their own keys (:meth:`sign_agent_csr`). For tests, and
        for the simulator's one listener (``instance_id="*"``: ``*.agent.vkec2``).
        """
        sans: list[x509.GeneralName] = [x509.DNSName(agent_server_name(instance_id))]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or []]
        return self._issue(instance_id, sans, ExtendedKeyUsageOID.SERVER_AUTH, valid_days)

    def issue_worker_client_cert(self, name: str = "vkec2-worker", *, valid_days: int = 397) -> IssuedCert:
        return self._issue(name, [x509.DNSName(name)], ExtendedKeyUsageOID.CLIENT_AUTH, valid_days)

    def client_tls(self, name: str = "vkec2-worker") -> ClientTls:
        issued = self.issue_worker_client_cert(name)
        return ClientTls(self.cert_pem, issued.cert_pem, issued.key_pem)
