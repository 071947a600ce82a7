"""``agent.identity``: how workers verify agents' identity documents; bad values are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.sim.identity import TEST_ACCOUNT, DocumentSigner
from vkec2.agent_client.bootstrap import IdentityVerifier
from vkec2.config import Settings
from vkec2.errors import AgentBootstrapRefused, ConfigError

SIGNER = DocumentSigner.create()


def settings(**identity: object) -> Settings:
    return Settings.model_validate({"agent": {"identity": identity}})


def test_defaults_check_signatures_and_take_the_account_from_sts() -> None:
    check = settings().agent.identity
    assert (check.aws_certificate_file, check.account_id, check.insecure_skip_signature_check) == (
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("identity", "words"),
    [
        ({"account_id": "12345"}, "12-digit"),
        ({"aws_certificate_pem": "not a certificate"}, "PEM certificate"),
        ({"aws_certificate_pem": SIGNER.cert_pem.decode(), "aws_certificate_file": "/x"}, "not both"),
    ],
)
def test_bad_values_are_refused_by_name(identity: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        settings(**identity)


def test_inline_and_file_certificates_verify_documents(tmp_path: Path) -> None:
    doc = SIGNER.identity("i-0123456789abcdef0")
    path = tmp_path / "aws.pem"
    path.write_bytes(SIGNER.cert_pem)
    for cfg in (
        settings(aws_certificate_pem=SIGNER.cert_pem.decode()),
        settings(aws_certificate_file=str(path)),
    ):
        verifier = IdentityVerifier.from_settings(cfg, lambda: TEST_ACCOUNT)
        verifier.verify(doc["document"], doc["signature"], "i-0123456789abcdef0", "test")
        with pytest.raises(AgentBootstrapRefused, match="does not verify"):
            verifier.verify(doc["document"] + " ", doc["signature"], "i-0123456789abcdef0", "test")
    fixed = IdentityVerifier.from_settings(
        settings(aws_certificate_file=str(path), account_id="210987654321"), str
    )
    with pytest.raises(AgentBootstrapRefused, match="accountId"):
        fixed.verify(doc["document"], doc["signature"], "i-0123456789abcdef0", "test")


def test_an_unreadable_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        IdentityVerifier.from_settings(settings(aws_certificate_file=str(tmp_path / "none.pem")), str)
