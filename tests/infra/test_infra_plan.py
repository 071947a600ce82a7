"""The pure side of ``vkec2 infra``: the drawn resources, their least-privilege documents, the plan.

Every Allow names its actions without wildcards and scopes its resources (``*`` only where AWS
has no resource-level permission: Describe calls, quotas, ECR's login token); the trusts are
conditioned; the inputs that would open the agent port are refused; the diff says create,
update (with the changed properties), unchanged or delete, in an order apply can follow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click
import pytest

from vkec2.cli.infra_commands import _artifact
from vkec2.config import Settings
from vkec2.domain.infra import (
    BUCKET,
    GROUP,
    OBJECT,
    OIDC,
    POLICY,
    PROFILE,
    REPOSITORY,
    ROLE,
    Artifact,
    InfraInputError,
    InfraInputs,
    Resource,
    desired,
)
from vkec2.domain.infradiff import CREATE, DELETE, UNCHANGED, UPDATE, plan, render

ACCOUNT = "123456789012"
SETTINGS = Settings.model_validate({"cluster_name": "ios", "ec2": {"instance_profile": "vkec2-ios-agent"}})
FULL = InfraInputs(
    account=ACCOUNT,
    vpc_id="vpc-0a",
    fleet_source="sg-0f",
    with_pipeline=True,
    github_repo="acme/fleet",
    oidc_provider_arn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/X",
    service_account="vkec2/worker",
    artifact=Artifact("agent.tar.gz", "ab" * 32),
)
#: Actions AWS gives no resource-level permission: "*" is the only resource they accept.
UNSCOPABLE = {"ecr:GetAuthorizationToken", "servicequotas:GetServiceQuota"}


def by_key(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
    return {r.key: r for r in resources}


def allows(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (action, resource) pair an Allow statement grants."""
    pairs = []
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        pairs += [(a, r) for a in actions for r in resources]
    return pairs


def test_the_full_set_in_creation_order() -> None:
    kinds = [r.kind for r in desired(SETTINGS, FULL)]
    assert kinds == [BUCKET, OBJECT, POLICY, OIDC, ROLE, ROLE, ROLE, PROFILE, GROUP, REPOSITORY]
    minimal = InfraInputs(account=ACCOUNT, vpc_id="vpc-0a", fleet_source="10.0.0.0/16")
    assert [r.kind for r in desired(SETTINGS, minimal)] == [BUCKET, POLICY, ROLE, PROFILE, GROUP, REPOSITORY]


def test_every_policy_is_least_privilege() -> None:
    resources = desired(SETTINGS, FULL)
    documents = [r.spec["document"] for r in resources if r.kind == POLICY]
    documents += [doc for r in resources if r.kind == ROLE for doc in r.spec["inline"].values()]
    assert len(documents) == 3
    for document in documents:
        for action, resource in allows(document):
            assert "*" not in action, action
            if resource == "*":
                assert action in UNSCOPABLE or action.startswith("ec2:Describe"), action
    roles = by_key(resources)
    agent = roles[(ROLE, "vkec2-ios-agent")].spec["inline"]["agent"]
    assert allows(agent) == [("s3:GetObject", f"arn:aws:s3:::vkec2-ios-artifacts-{ACCOUNT}/agent/*")]
    fleet = roles[(POLICY, "vkec2-ios-fleet")].spec["document"]
    assert ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/vkec2-ios-agent") in allows(fleet)


def test_trusts_are_conditioned() -> None:
    roles = by_key(desired(SETTINGS, FULL))
    (irsa,) = roles[(ROLE, "vkec2-ios-fleet")].spec["trust"]["Statement"]
    assert irsa["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert irsa["Condition"]["StringEquals"] == {
        "oidc.eks.us-west-2.amazonaws.com/id/X:aud": "sts.amazonaws.com",
        "oidc.eks.us-west-2.amazonaws.com/id/X:sub": "system:serviceaccount:vkec2:worker",
    }
    (github,) = roles[(ROLE, "vkec2-ios-pipeline")].spec["trust"]["Statement"]
    assert github["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    }
    assert github["Condition"] == {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
        "StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/fleet:*"},
    }
    (ec2,) = roles[(ROLE, "vkec2-ios-agent")].spec["trust"]["Statement"]
    assert ec2["Principal"] == {"Service": "ec2.amazonaws.com"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fleet_source": "0.0.0.0/0"}, "whole internet"),
        ({"fleet_source": "::/0"}, "whole internet"),
        ({"fleet_source": "sg-zz"}, "neither a security group ID nor a CIDR"),
        ({"service_account": None}, "go together"),
        ({"github_repo": None}, "--with-pipeline needs --github-repo"),
        ({"github_repo": "acme"}, "is not OWNER/NAME"),
        ({"service_account": "Bad/NS"}, "NAMESPACE/NAME"),
        (
            {"account": "1" * 12, "vpc_id": "vpc-0a", "fleet_source": "sg-0f", "settings": "x" * 35},
            "too long",
        ),
    ],
)
def test_unsafe_or_incomplete_inputs_are_refused(change: dict[str, Any], message: str) -> None:
    settings = (
        Settings.model_validate({"cluster_name": change.pop("settings")})
        if "settings" in change
        else SETTINGS
    )
    inputs = InfraInputs(**{**FULL.__dict__, **change})
    with pytest.raises(InfraInputError, match=message):
        desired(settings, inputs)


def test_an_open_source_needs_the_explicit_flag() -> None:
    inputs = InfraInputs(**{**FULL.__dict__, "fleet_source": "0.0.0.0/0", "allow_open": True})
    group = next(r for r in desired(SETTINGS, inputs) if r.kind == GROUP)
    assert group.spec["ingress"] == [{"protocol": "tcp", "port": 8200, "cidr": "0.0.0.0/0"}]


def test_plan_says_create_update_unchanged_delete() -> None:
    wanted = [Resource(BUCKET, "b", {"versioning": "Enabled"}), Resource(ROLE, "r", {"trust": {"a": 1}})]
    wanted.append(Resource(REPOSITORY, "e", {"immutable": True, "lifecycle": {"rules": [1]}}))
    actual: dict[tuple[str, str], dict[str, Any]] = {
        (BUCKET, "b"): {"versioning": "Enabled", "extra": "ignored"},
        (REPOSITORY, "e"): {"immutable": True, "lifecycle": {"rules": [2]}},
        (PROFILE, "old"): {"roles": ["x"]},
        (BUCKET, "old"): {"versioning": "Enabled"},
    }
    changes = plan(wanted, actual)
    assert [(c.action, c.kind, c.name) for c in changes] == [
        (UNCHANGED, BUCKET, "b"),
        (CREATE, ROLE, "r"),
        (UPDATE, REPOSITORY, "e"),
        (DELETE, PROFILE, "old"),  # dependants go before what they depend on
        (DELETE, BUCKET, "old"),
    ]
    assert changes[2].fields == ["lifecycle"]
    text = render(changes)
    assert "~ update    ecr-repository       e  (lifecycle)" in text
    assert "1 to create, 1 to update, 2 to delete" in text.splitlines()[-1]
    assert (
        render(plan(wanted[:1], {(BUCKET, "b"): {"versioning": "Enabled"}})).splitlines()[-1] == "no changes"
    )


def test_the_artifact_digest_is_checked_against_its_sha256_file(tmp_path: Path) -> None:
    artifact = tmp_path / "agent.tar.gz"
    artifact.write_bytes(b"build")
    digest = hashlib.sha256(b"build").hexdigest()
    assert _artifact(artifact) == Artifact("agent.tar.gz", digest)
    (tmp_path / "agent.tar.gz.sha256").write_text(f"{digest}  agent.tar.gz\n")
    assert _artifact(artifact) == Artifact("agent.tar.gz", digest)
    (tmp_path / "agent.tar.gz.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(click.ClickException, match="says 0000"):
        _artifact(artifact)
