"""The workers' IAM policy, drawn from the configuration: only what the fleet may launch with.

:func:`workers_policy` returns the policy document ``vkec2 infra iam-policy`` prints (and
docs/deployment.md shows): RunInstances only on the AMIs, subnets, security groups and key pairs
the configuration and its allowlists name (every namespace's, see :mod:`vkec2.domain.allowlist`),
the instance limited to the allowed instance types (``ec2:InstanceType``) and instance profiles
(``ec2:InstanceProfile``), tagged with the cluster at launch (``aws:RequestTag``) and, given the
VPC, its network pieces in that VPC (``ec2:Vpc``); CreateTags and TerminateInstances only on
instances carrying the cluster's tag (``aws:ResourceTag``); ``iam:PassRole`` only for the named
roles, to EC2; ``s3:GetObject`` on the agent artifact's folder when ``bootstrap.s3_bucket`` is
set; RunInstances on the configured launch templates (by ID; any template when one is named by
name, since its ARN carries only the ID), whose AMI must be one of the allowed images; with any
Spot capacity type usable, RunInstances on Spot requests and the one-time creation of EC2 Spot's
service-linked role; with ``host_pools``, AllocateHosts tagged with the cluster and ReleaseHosts
and RunInstances on the cluster's own hosts (``vkec2.io/cluster`` tag). A kind whose allowlist
holds ``"*"`` gets the whole account's resources of that kind (with the VPC condition where AWS
supports one); a kind nobody names gets none (no key pair, no instance profile), except subnets
and security groups, where EC2 then uses the VPC's default ones. Describe calls have no
resource-level permissions in EC2, so they stay on ``*``. Account and VPC are not in the
configuration: the caller passes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vkec2.config import Settings
from vkec2.config.allowlist import ANY, KINDS, Kind
from vkec2.contract import ON_DEMAND, TAG_CLUSTER
from vkec2.domain.allowlist import configured

#: The placeholder printed for the account when none is given.
ACCOUNT_PLACEHOLDER = "ACCOUNT"


@dataclass(frozen=True)
class PolicyInputs:
    """What the policy needs beyond the configuration."""

    account: str = ACCOUNT_PLACEHOLDER
    vpc_id: str | None = None
    roles: tuple[str, ...] = ()  # instance roles PassRole may hand to EC2 (default: the profiles' names)
    partition: str = "aws"


def usable(settings: Settings) -> dict[Kind, set[str]]:
    """Every value of each kind some pod may launch with: configured, or on any allowlist."""
    found = configured(settings)
    lists = settings.allowlists
    for allowlist in (lists.default, *lists.namespaces.values()):
        for kind in KINDS:
            found[kind] |= set(getattr(allowlist, kind) or ())
    return found


def _profile_name(value: str) -> str:
    return value.rsplit("/", 1)[-1] if value.startswith("arn:") else value


def _launch_templates(settings: Settings, ec2: str) -> list[str]:
    """The ARNs of the configured launch templates (by ID; one named only: any template)."""
    refs = [t.launch_template for t in (settings.ec2, *settings.warm_pools) if t.launch_template is not None]
    if any(ref.id is None for ref in refs):
        return [f"{ec2}:launch-template/*"]
    return sorted({f"{ec2}:launch-template/{ref.id}" for ref in refs})


def workers_policy(settings: Settings, inputs: PolicyInputs) -> dict[str, Any]:
    """The IAM policy document (a JSON-ready dict) for the workers of this configuration."""
    region, account, part = settings.region, inputs.account, inputs.partition
    ec2 = f"arn:{part}:ec2:{region}:{account}"
    values = usable(settings)

    def arns(kind: Kind, prefix: str, when_none: list[str]) -> list[str]:
        """The ARNs of a kind's values; ``prefix*`` for "*", ``when_none`` when nothing is named."""
        if ANY in values[kind]:
            return [f"{prefix}*"]
        return [f"{prefix}{value}" for value in sorted(values[kind])] or when_none

    # No subnet or group named: EC2 picks the VPC's default ones (the VPC condition still holds).
    images = arns("images", f"arn:{part}:ec2:{region}::image/", [])
    subnets = arns("subnets", f"{ec2}:subnet/", [f"{ec2}:subnet/*"])
    groups = arns("security_groups", f"{ec2}:security-group/", [f"{ec2}:security-group/*"])
    keys = arns("key_pairs", f"{ec2}:key-pair/", [])
    in_vpc = {"ArnEquals": {"ec2:Vpc": f"{ec2}:vpc/{inputs.vpc_id}"}} if inputs.vpc_id else None

    instance_condition: dict[str, Any] = {
        "StringEquals": {f"aws:RequestTag/{TAG_CLUSTER}": settings.cluster_name}
    }
    if ANY not in values["instance_types"]:
        instance_condition["StringEquals"]["ec2:InstanceType"] = sorted(values["instance_types"])
    profiles = sorted(values["instance_profiles"] - {ANY})
    profile_arns = [
        p if p.startswith("arn:") else f"arn:{part}:iam::{account}:instance-profile/{p}" for p in profiles
    ]
    if ANY in values["instance_profiles"]:
        pass  # any profile of the account
    elif profile_arns:
        instance_condition["ArnEqualsIfExists"] = {"ec2:InstanceProfile": profile_arns}
    else:
        instance_condition["Null"] = {"ec2:InstanceProfile": "true"}  # no profile may be passed

    statements: list[dict[str, Any]] = [
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeSubnets",
                "ec2:DescribeImages",
            ],
            "Resource": "*",
        },
        {
            "Sid": "LaunchTaggedInstancesOfAllowedShape",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": f"{ec2}:instance/*",
            "Condition": instance_condition,
        },
        {
            "Sid": "LaunchFromAllowedImagesAndKeys",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [*images, *keys, f"{ec2}:volume/*"],
        },
        {
            "Sid": "LaunchIntoAllowedNetwork",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [*subnets, *groups, f"{ec2}:network-interface/*"],
            **({"Condition": in_vpc} if in_vpc else {}),
        },
        {
            "Sid": "TagAtLaunch",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [f"{ec2}:instance/*", f"{ec2}:volume/*"],
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        },
        {
            "Sid": "ManageOwnInstances",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:TerminateInstances"],
            "Resource": f"{ec2}:instance/*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/{TAG_CLUSTER}": settings.cluster_name}},
        },
        {  # the agent installer's failure marker (vkec2.fleet.installcheck)
            "Sid": "ReadOwnConsoles",
            "Effect": "Allow",
            "Action": "ec2:GetConsoleOutput",
            "Resource": f"{ec2}:instance/*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/{TAG_CLUSTER}": settings.cluster_name}},
        },
        {"Sid": "Quotas", "Effect": "Allow", "Action": "servicequotas:GetServiceQuota", "Resource": "*"},
    ]
    templates = _launch_templates(settings, ec2)
    if templates:
        statements.append(
            {
                "Sid": "LaunchFromTheLaunchTemplates",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": templates,
            }
        )
    if values["capacity_types"] - {ON_DEMAND}:  # a Spot launch also creates its Spot request
        statements += [
            {
                "Sid": "LaunchSpot",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:spot-instances-request/*",
            },
            {
                "Sid": "SpotServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": f"arn:{part}:iam::{account}:role/aws-service-role/spot.amazonaws.com/*",
                "Condition": {"StringLike": {"iam:AWSServiceName": "spot.amazonaws.com"}},
            },
        ]
    if settings.host_pools:
        statements += _host_statements(settings.cluster_name, ec2)
    roles = inputs.roles or tuple(_profile_name(p) for p in profiles)
    if roles:
        statements.append(
            {
                "Sid": "PassTheInstanceRoles",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": [f"arn:{part}:iam::{account}:role/{role}" for role in roles],
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            }
        )
    bucket, key = settings.bootstrap.s3_bucket, settings.bootstrap.s3_key
    if settings.agent.artifact is not None:  # the pinned artifacts (one folder for every platform)
        bucket, key = settings.agent.artifact.location(next(iter(settings.agent.artifact.sha256)))
    if bucket:
        folder = key.rsplit("/", 1)[0] + "/" if key and "/" in key else ""
        statements.append(
            {
                "Sid": "AgentArtifact",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:{part}:s3:::{bucket}/{folder}*",
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def _host_statements(cluster: str, ec2: str) -> list[dict[str, Any]]:
    """With ``host_pools``: allocate hosts tagged with the cluster, release and launch on its own hosts."""
    own = {"StringEquals": {f"aws:ResourceTag/{TAG_CLUSTER}": cluster}}
    return [
        {"Sid": "DescribeHosts", "Effect": "Allow", "Action": "ec2:DescribeHosts", "Resource": "*"},
        {
            "Sid": "AllocateTaggedHosts",
            "Effect": "Allow",
            "Action": "ec2:AllocateHosts",
            "Resource": f"{ec2}:dedicated-host/*",
            "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_CLUSTER}": cluster}},
        },
        {
            "Sid": "TagAtAllocation",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": f"{ec2}:dedicated-host/*",
            "Condition": {"StringEquals": {"ec2:CreateAction": "AllocateHosts"}},
        },
        {
            "Sid": "ReleaseAndLaunchOnOwnHosts",
            "Effect": "Allow",
            "Action": ["ec2:ReleaseHosts", "ec2:RunInstances"],
            "Resource": f"{ec2}:dedicated-host/*",
            "Condition": own,
        },
    ]
