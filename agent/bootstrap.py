"""Who this agent is, and what it trusts: the agent half of the mTLS bootstrap (docs/security.md).

At start the agent knows its instance identity (on EC2: the IMDSv2 instance identity document and
its signature; in tests and simulation: a file or a fixed instance ID, so nothing ever dials
169.254.169.254 off EC2) and, from its user data, the fleet CA certificate it pins and the launch's
one-time bootstrap secret (:class:`Trust`). It serves only AgentBootstrap and health. The fleet
sends a fresh nonce; the agent answers with a CSR for a key it made itself (:mod:`agent.pki`), its
identity document and :func:`bootstrap_proof`, an HMAC under the secret binding nonce, CSR and
document, so a replayed document or answer is worthless without the secret. The fleet signs the
CSR; the agent accepts the certificate only if it chains to the pinned CA and names its own
instance, then restarts its listener with TLS requiring client certificates from the pinned CA
(never from anything a caller sends). The material can be kept in a state directory (files
readable by the agent's user only) so a restarted agent comes back authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

IMDS_ENDPOINT = "http://169.254.169.254"
AGENT_NAME_SUFFIX = "agent.vkec2"
#: Nonces shorter than this are refused: the proof must not be replayable.
MIN_NONCE_BYTES = 16
_PROOF_CONTEXT = b"vkec2 agent bootstrap proof v1"
_SECRET = re.compile(r"[0-9a-f]{32,128}")


def agent_server_name(instance_id: str) -> str:
    """The DNS name an agent's server certificate carries, and the TLS target name workers check."""
    return f"{instance_id}.{AGENT_NAME_SUFFIX}"


def bootstrap_proof(secret: str, nonce: bytes, csr_pem: bytes, document: str) -> bytes:
    """HMAC-SHA256 under the launch's bootstrap secret over the fleet's nonce, the CSR and the document."""
    mac = hmac.new(secret.encode(), _PROOF_CONTEXT, hashlib.sha256)
    for part in (nonce, csr_pem, document.encode()):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.digest()


def check_secret(secret: str) -> str:
    """A bootstrap secret: 32 to 128 lowercase hex digits (what the fleet renders)."""
    secret = secret.strip()
    if not _SECRET.fullmatch(secret):
        raise ValueError("the bootstrap secret must be 32 to 128 lowercase hex digits")
    return secret


@dataclass(frozen=True)
class Trust:
    """What the user data gives the agent: the fleet CA to pin and the launch's bootstrap secret."""

    ca_pem: bytes
    secret: str

    @classmethod
    def from_files(cls, ca_file: str, secret_file: str) -> Trust:
        try:
            ca_pem = Path(ca_file).read_bytes()
            secret = Path(secret_file).read_text()
        except OSError as exc:
            raise IdentityError(f"cannot read the bootstrap trust {exc.filename}: {exc.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise IdentityError(f"{ca_file} is not a PEM certificate (the fleet CA)")
        try:
            return cls(ca_pem, check_secret(secret))
        except ValueError as exc:
            raise IdentityError(f"{secret_file}: {exc}") from None


class IdentityError(Exception):
    """The agent could not learn which instance it runs on."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str = ""
    availability_zone: str = ""
    private_ip: str = ""
    document: str = ""
    signature: str = ""
    source: str = "static"


def identity_from_document(document: str, signature: str, source: str) -> Identity:
    try:
        doc = json.loads(document)
    except json.JSONDecodeError as exc:
        raise IdentityError(f"the instance identity document is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("instanceId"), str) or not doc["instanceId"]:
        raise IdentityError("the instance identity document has no instanceId")
    return Identity(
        instance_id=doc["instanceId"],
        region=str(doc.get("region", "")),
        availability_zone=str(doc.get("availabilityZone", "")),
        private_ip=str(doc.get("privateIp", "")),
        document=document,
        signature=signature,
        source=source,
    )


def identity_from_imds(endpoint: str = IMDS_ENDPOINT, timeout: float = 2.0) -> Identity:
    """IMDSv2: a session token, then the instance identity document and its signature."""
    base = endpoint.rstrip("/")
    try:
        req = urllib.request.Request(
            f"{base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            token = resp.read().decode()

        def get(path: str) -> str:
            r = urllib.request.Request(f"{base}{path}", headers={"X-aws-ec2-metadata-token": token})
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return str(resp.read().decode())

        document = get("/latest/dynamic/instance-identity/document")
        signature = get("/latest/dynamic/instance-identity/signature")
    except OSError as exc:
        raise IdentityError(f"instance metadata service at {base} did not answer: {exc}") from None
    return identity_from_document(document, signature, "imds")


def identity_from_file(path: str) -> Identity:
    """A JSON instance identity document on disk; a ``signature`` key or ``PATH.sig`` file is optional."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc}") from None
    signature = ""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IdentityError(f"identity file {path} is not JSON: {exc}") from None
    if isinstance(raw, dict) and "document" in raw:
        # {"document": {...} | "...", "signature": "..."}
        doc = raw["document"]
        text = doc if isinstance(doc, str) else json.dumps(doc)
        signature = str(raw.get("signature", ""))
    sig_path = Path(path + ".sig")
    if not signature and sig_path.exists():
        signature = sig_path.read_text().strip()
    return identity_from_document(text, signature, "file")


@dataclass(frozen=True)
class CertificateRequest:
    """An agent's answer to the fleet's nonce: its CSR, identity document and proof of the secret."""

    csr_pem: bytes
    document: str
    signature: str
    proof: bytes


# ------------------------------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TlsMaterial:
    """What the agent serves mTLS with: its certificate (+ chain), its own key and the pinned fleet CA."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    FILES = ("server.crt", "server.key", "ca.crt")

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in zip(self.FILES, (self.cert_pem, self.key_pem, self.ca_pem), strict=True):
            tmp = directory / (name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, directory / name)

    @classmethod
    def load(cls, directory: Path) -> TlsMaterial | None:
        paths = [directory / n for n in cls.FILES]
        if not all(p.exists() for p in paths):
            return None
        cert, key, ca = (p.read_bytes() for p in paths)
        return cls(cert, key, ca)
