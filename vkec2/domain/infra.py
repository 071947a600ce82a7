"""The AWS prerequisites ``vkec2 infra`` manages, drawn as data: names, settings and policy documents.

:func:`desired` turns the configuration and the command line (:class:`InfraInputs`) into the list
of :class:`Resource` the cluster needs: the agent artifact bucket (and, given a file, its object
under a key holding its sha256), the instances' role (reading the artifact folder, nothing else)
and instance profile, the agent's security group (the agent port from the fleet only), the
fleet's managed policy (:func:`vkec2.domain.iampolicy.workers_policy`) and its IRSA role, the ECR
repository with its retention rules and, with the pipeline, GitHub's OIDC provider and a role
that may only push to that repository and write artifacts. Each resource's ``spec`` holds exactly
the properties that are compared with what AWS reports (:mod:`vkec2.domain.infradiff`); reading
and writing AWS is :mod:`vkec2.ec2.infra`. Pure: no I/O here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from vkec2.config import Settings
from vkec2.domain.iampolicy import PolicyInputs, workers_policy

#: Kinds of resources, in the order apply creates them (destroy goes backwards).
BUCKET = "s3-bucket"
OBJECT = "s3-object"
POLICY = "iam-policy"
OIDC = "iam-oidc-provider"
ROLE = "iam-role"
PROFILE = "iam-instance-profile"
GROUP = "security-group"
REPOSITORY = "ecr-repository"
KINDS = (BUCKET, OBJECT, POLICY, OIDC, ROLE, PROFILE, GROUP, REPOSITORY)

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"
#: The agent's objects live under this folder of the bucket.
ARTIFACT_FOLDER = "agent/"
#: CIDRs that open the agent port to anyone: refused unless explicitly allowed.
OPEN_CIDRS = frozenset({"0.0.0.0/0", "::/0"})

_SG_RE = re.compile(r"sg-[0-9a-f]{1,32}")
_REPO_RE = re.compile(r"[A-Za-z0-9_.-]{1,39}/[A-Za-z0-9_.-]{1,100}")
_SA_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?")
_OIDC_ARN_RE = re.compile(r"arn:aws[\w-]*:iam::\d{12}:oidc-provider/(\S+)")


class InfraInputError(ValueError):
    """The options cannot make a safe, complete plan; the message names the option."""


@dataclass(frozen=True)
class Artifact:
    """The agent artifact to upload: its file name and content digest."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class InfraInputs:
    """What the resources need beyond the configuration (the command line's options, resolved)."""

    account: str
    vpc_id: str
    fleet_source: str  # a security group ID or a CIDR
    allow_open: bool = False  # accept 0.0.0.0/0 as the fleet source
    with_pipeline: bool = False
    github_repo: str | None = None
    oidc_provider_arn: str | None = None
    service_account: str | None = None  # NAMESPACE/NAME
    artifact: Artifact | None = None
    partition: str = "aws"
    tls_only: bool = True  # the bucket refuses plaintext requests (off only for an http:// test endpoint)


@dataclass(frozen=True)
class Resource:
    """One AWS resource: kind, name (its key in its kind) and the compared properties."""

    kind: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


@dataclass(frozen=True)
class Names:
    """The names of one cluster's resources."""

    bucket: str
    instance_role: str
    fleet_policy: str
    fleet_role: str
    pipeline_role: str
    group: str
    repository: str


def names(settings: Settings, account: str) -> Names:
    """Every name derives from ``vkec2-<cluster>`` (the bucket's adds the account: S3 names are global)."""
    base = f"vkec2-{settings.cluster_name}"
    bucket = f"{base}-artifacts-{account}".lower().replace("_", "-")
    if len(f"{base}-pipeline") > 64 or len(bucket) > 63:  # IAM role and S3 bucket name limits
        raise InfraInputError(
            f"cluster_name {settings.cluster_name!r} is too long for the IAM role and bucket names "
            f"vkec2 infra derives from it (at most 34 characters)"
        )
    return Names(
        bucket=bucket,
        instance_role=f"{base}-agent",
        fleet_policy=f"{base}-fleet",
        fleet_role=f"{base}-fleet",
        pipeline_role=f"{base}-pipeline",
        group=f"{base}-agent",
        repository=settings.infra.ecr_repository or base.lower(),
    )


def check(inputs: InfraInputs) -> None:
    """Refuse inputs that would open the agent port or leave a role half-specified."""
    source = inputs.fleet_source
    if not _SG_RE.fullmatch(source):
        try:
            network = ipaddress.ip_network(source, strict=True)
        except ValueError as exc:
            raise InfraInputError(
                f"--fleet-source {source!r} is neither a security group ID nor a CIDR"
            ) from exc
        if network.prefixlen == 0 and not inputs.allow_open:
            raise InfraInputError(
                f"--fleet-source {source} opens the agent port to the whole internet; "
                "give the workers' security group or CIDR (or --insecure-open-agent-port)"
            )
    if (inputs.oidc_provider_arn is None) != (inputs.service_account is None):
        raise InfraInputError("--oidc-provider-arn and --service-account go together (the IRSA role)")
    if inputs.oidc_provider_arn is not None and not _OIDC_ARN_RE.fullmatch(inputs.oidc_provider_arn):
        raise InfraInputError(f"--oidc-provider-arn {inputs.oidc_provider_arn!r} is not an OIDC provider ARN")
    if inputs.service_account is not None and not _SA_RE.fullmatch(inputs.service_account):
        raise InfraInputError(f"--service-account {inputs.service_account!r} is not NAMESPACE/NAME")
    if inputs.with_pipeline and inputs.github_repo is None:
        raise InfraInputError("--with-pipeline needs --github-repo OWNER/NAME")
    if inputs.github_repo is not None and not _REPO_RE.fullmatch(inputs.github_repo):
        raise InfraInputError(f"--github-repo {inputs.github_repo!r} is not OWNER/NAME")


def lifecycle_policy(keep_tagged: int, untagged_days: int) -> dict[str, Any]:
    """ECR retention: untagged images expire after some days, only the newest tagged images stay."""
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"expire untagged images after {untagged_days} days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": untagged_days,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": f"keep the newest {keep_tagged} tagged images",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPatternList": ["*"],
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_tagged,
                },
                "action": {"type": "expire"},
            },
        ]
    }


def instance_role_policy(bucket: str, partition: str = "aws") -> dict[str, Any]:
    """The agent on an instance reads its artifact, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadAgentArtifact",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:{partition}:s3:::{bucket}/{ARTIFACT_FOLDER}*",
            }
        ],
    }


def ec2_trust() -> dict[str, Any]:
    """Only EC2 may assume the instance role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }


def irsa_trust(provider_arn: str, service_account: str) -> dict[str, Any]:
    """The fleet's role: only one service account may assume it, through the cluster's OIDC provider."""
    match = _OIDC_ARN_RE.fullmatch(provider_arn)
    host = match.group(1) if match else provider_arn
    namespace, name = service_account.split("/", 1)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{host}:aud": STS_AUDIENCE,
                        f"{host}:sub": f"system:serviceaccount:{namespace}:{name}",
                    }
                },
            }
        ],
    }


def github_trust(account: str, repo: str, partition: str = "aws") -> dict[str, Any]:
    """The pipeline role, assumable only by GitHub Actions runs of one repository."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "Federated": f"arn:{partition}:iam::{account}:oidc-provider/{GITHUB_OIDC_HOST}"
                },
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE},
                    "StringLike": {f"{GITHUB_OIDC_HOST}:sub": f"repo:{repo}:*"},
                },
            }
        ],
    }


def pipeline_policy(repository_arn: str, bucket: str, partition: str = "aws") -> dict[str, Any]:
    """Push to the one ECR repository and write agent artifacts; GetAuthorizationToken has no resource."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Sid": "PushTheFleetImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:CompleteLayerUpload",
                    "ecr:InitiateLayerUpload",
                    "ecr:PutImage",
                    "ecr:UploadLayerPart",
                ],
                "Resource": repository_arn,
            },
            {
                "Sid": "WriteAgentArtifacts",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:{partition}:s3:::{bucket}/{ARTIFACT_FOLDER}*",
            },
        ],
    }


def artifact_key(artifact: Artifact) -> str:
    """The object key: the folder, the digest, the file name (a new build never overwrites an old one)."""
    return f"{ARTIFACT_FOLDER}{artifact.sha256}/{artifact.filename}"


def desired(settings: Settings, inputs: InfraInputs) -> list[Resource]:
    """The cluster's resources, in creation order; :func:`check` the inputs first."""
    check(inputs)
    n = names(settings, inputs.account)
    part, account = inputs.partition, inputs.account
    policy_arn = f"arn:{part}:iam::{account}:policy/{n.fleet_policy}"
    repository_arn = f"arn:{part}:ecr:{settings.region}:{account}:repository/{n.repository}"
    fleet = workers_policy(
        settings,
        PolicyInputs(account=account, vpc_id=inputs.vpc_id, roles=(n.instance_role,), partition=part),
    )
    resources = [
        Resource(
            BUCKET,
            n.bucket,
            {
                "versioning": "Enabled",
                "encryption": "AES256",
                "public_access_blocked": True,
                "tls_only": inputs.tls_only,
            },
        )
    ]
    if inputs.artifact is not None:
        key = artifact_key(inputs.artifact)
        resources.append(Resource(OBJECT, f"{n.bucket}/{key}", {"sha256": inputs.artifact.sha256}))
    resources.append(Resource(POLICY, n.fleet_policy, {"document": fleet}))
    if inputs.with_pipeline:
        resources.append(Resource(OIDC, GITHUB_OIDC_HOST, {"client_ids": [STS_AUDIENCE]}))
    resources.append(
        Resource(
            ROLE,
            n.instance_role,
            {"trust": ec2_trust(), "inline": {"agent": instance_role_policy(n.bucket, part)}, "attached": []},
        )
    )
    if inputs.oidc_provider_arn is not None and inputs.service_account is not None:
        trust = irsa_trust(inputs.oidc_provider_arn, inputs.service_account)
        resources.append(
            Resource(ROLE, n.fleet_role, {"trust": trust, "inline": {}, "attached": [policy_arn]})
        )
    if inputs.with_pipeline and inputs.github_repo is not None:
        spec = {
            "trust": github_trust(account, inputs.github_repo, part),
            "inline": {"pipeline": pipeline_policy(repository_arn, n.bucket, part)},
            "attached": [],
        }
        resources.append(Resource(ROLE, n.pipeline_role, spec))
    resources.append(Resource(PROFILE, n.instance_role, {"roles": [n.instance_role]}))
    source = (
        {"group": inputs.fleet_source}
        if _SG_RE.fullmatch(inputs.fleet_source)
        else {"cidr": inputs.fleet_source}
    )
    ingress = [{"protocol": "tcp", "port": settings.agent.port, **source}]
    resources.append(Resource(GROUP, n.group, {"vpc_id": inputs.vpc_id, "ingress": ingress}))
    infra = settings.infra
    lifecycle = lifecycle_policy(infra.ecr_keep_tagged, infra.ecr_untagged_days)
    resources.append(
        Resource(REPOSITORY, n.repository, {"scan_on_push": True, "immutable": True, "lifecycle": lifecycle})
    )
    return resources
