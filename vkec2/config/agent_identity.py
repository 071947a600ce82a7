"""``agent.identity``: how workers verify an agent's EC2 instance identity document at bootstrap.

The document comes with a signature AWS makes for the region (the base64 RSA-SHA256 ``signature``
of IMDS); ``aws_certificate_file`` (or, inline, ``aws_certificate_pem``: handy in a Helm values
file) is AWS's public certificate for the fleet's region (see docs/security.md), or in tests the
certificate of a test key pair. ``account_id`` is the account the
fleet launches in; when unset, it is the account of the workers' own AWS credentials (STS
GetCallerIdentity, asked once per process). Without a certificate a TLS fleet refuses every
bootstrap unless ``insecure_skip_signature_check`` says otherwise, loudly.
"""

from __future__ import annotations

import re

from pydantic import field_validator, model_validator

from vkec2.config.shapes import Section

ACCOUNT_RE = re.compile(r"\d{12}")


class AgentIdentityCheck(Section):
    """What an agent's identity document must satisfy before its CSR is signed."""

    aws_certificate_file: str | None = None
    aws_certificate_pem: str | None = None
    account_id: str | None = None
    insecure_skip_signature_check: bool = False

    @model_validator(mode="after")
    def _one_certificate(self) -> AgentIdentityCheck:
        if self.aws_certificate_file and self.aws_certificate_pem:
            raise ValueError("set aws_certificate_file or aws_certificate_pem, not both")
        if self.aws_certificate_pem and "-----BEGIN CERTIFICATE-----" not in self.aws_certificate_pem:
            raise ValueError("aws_certificate_pem must be a PEM certificate")
        return self

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_RE.fullmatch(value):
            raise ValueError(f"must be a 12-digit AWS account ID, not {value!r}")
        return value
