"""Signed EC2 instance identity documents for tests and the simulator, from a test key pair.

On EC2, IMDS serves the instance identity document (JSON) and ``signature``, a base64 RSA-SHA256
signature AWS makes with the region's key; the fleet verifies it with AWS's public certificate
(``agent.identity.aws_certificate_file``). Off EC2 nothing may dial IMDS, so tests and the
simulator sign documents of the same shape with a :class:`DocumentSigner`: a self-signed RSA test
certificate whose PEM the fleet is configured with in place of AWS's. It is simulation code built on
``cryptography``; the agent on an instance never imports it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TEST_ACCOUNT = "123456789012"  # moto's default account


class DocumentSigner:
    """An RSA test key pair standing in for AWS's identity-document key of a region."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vkec2 test identity documents")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )

    @classmethod
    def create(cls) -> DocumentSigner:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def load(cls, key_file: str | Path) -> DocumentSigner:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_file} is not an RSA private key")
        return cls(key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def save_key(self, path: str | Path) -> None:
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    def sign(self, document: str) -> str:
        """The base64 signature of ``document``, as IMDS serves ``/instance-identity/signature``."""
        raw = self.key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode()

    @staticmethod
    def document(
        instance_id: str,
        region: str = "us-west-2",
        account: str = TEST_ACCOUNT,
        private_ip: str = "127.0.0.1",
    ) -> str:
        """An identity document shaped like AWS's, for ``instance_id``."""
        return json.dumps(
            {
                "accountId": account,
                "architecture": "x86_64",
                "availabilityZone": f"{region}a",
                "imageId": "ami-12c6146b",
                "instanceId": instance_id,
                "instanceType": "m5.large",
                "pendingTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "privateIp": private_ip,
                "region": region,
                "version": "2017-09-30",
            },
            indent=2,
        )

    def identity(
        self, instance_id: str, region: str = "us-west-2", account: str = TEST_ACCOUNT
    ) -> dict[str, str]:
        """``{"document": ..., "signature": ...}``: the shape ``vkec2 agent --identity-file`` reads."""
        doc = self.document(instance_id, region, account)
        return {"document": doc, "signature": self.sign(doc)}

    def write_identity_file(self, path: str | Path, instance_id: str, region: str = "us-west-2") -> Path:
        Path(path).write_text(json.dumps(self.identity(instance_id, region)))
        return Path(path)
