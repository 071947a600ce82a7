"""``vkec2 infra``'s reading side: what the cluster's AWS prerequisites look like now, through boto3.

:class:`InfraAws` holds one boto3 client per service (S3, IAM, EC2, ECR, STS; region, endpoint and
retries from the configuration) and :meth:`InfraAws.actual` reads back every resource of the
cluster in the shape :mod:`vkec2.domain.infra` draws it: the ones carrying both the
``vkec2.io/cluster`` and ``vkec2.io/managed-by=infra`` tags (found by listing the ``vkec2-``
names, or EC2's tag filter), plus the object of the artifact being uploaded. A resource with a
desired name that exists without those tags is a conflict: it is reported, never adopted or
changed (except GitHub's OIDC provider, account-wide: an existing one is used, at most gets the
``sts.amazonaws.com`` audience added, and is never deleted). Every AWS failure becomes an
:class:`InfraAwsError` naming the resource and AWS's error code. Writing is
:mod:`vkec2.ec2.infra_apply`. No library reads back these resources as plain values (Terraform
and CloudFormation are whole tools with their own state), hence this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from vkec2.config import Settings
from vkec2.contract import MANAGED_BY_INFRA, TAG_CLUSTER, TAG_MANAGED_BY
from vkec2.domain.infra import (
    BUCKET,
    GITHUB_OIDC_HOST,
    GROUP,
    OBJECT,
    OIDC,
    POLICY,
    PROFILE,
    REPOSITORY,
    ROLE,
    Resource,
)
from vkec2.domain.infradiff import Key

#: Every name ``vkec2 infra`` gives starts so (the OIDC provider aside).
PREFIX = "vkec2-"
#: The Sid of the bucket policy statement refusing plaintext requests.
TLS_ONLY_SID = "DenyPlaintext"


class InfraAwsError(Exception):
    """An AWS call about one resource failed; the message names the resource and AWS's error code."""

    def __init__(self, kind: str, name: str, code: str, message: str) -> None:
        super().__init__(f"{kind} {name}: {code}: {message}")
        self.kind, self.name, self.code = kind, name, code


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


@contextmanager
def about(kind: str, name: str) -> Iterator[None]:
    """Turn boto3's failures inside into an :class:`InfraAwsError` about this resource."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        message = str(exc.response.get("Error", {}).get("Message", exc))
        raise InfraAwsError(kind, name, error_code(exc), message) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise InfraAwsError(kind, name, type(exc).__name__, str(exc)) from None


def _missing(call: Callable[[], Any], *codes: str) -> Any:
    """The call's answer, or None when AWS answers one of these "not there" codes."""
    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in codes:
            return None
        raise


def _tagdict(tags: Sequence[dict[str, str]] | None) -> dict[str, str]:
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in tags or ()}


@dataclass
class InfraAws:
    """The boto3 clients and what has been learnt of the account (IDs and ARNs of found resources)."""

    settings: Settings
    clients: dict[str, Any] = field(default_factory=dict)
    group_ids: dict[str, str] = field(default_factory=dict)
    group_rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    partition: str = "aws"

    def client(self, service: str) -> Any:
        if service not in self.clients:
            aws = self.settings.aws
            config = botocore.config.Config(
                connect_timeout=aws.connect_timeout_seconds,
                read_timeout=aws.read_timeout_seconds,
                retries={"max_attempts": aws.max_attempts, "mode": "standard"},
            )
            session = boto3.session.Session(region_name=self.settings.region)
            make: Callable[..., Any] = session.client  # one of several services: typed per call site
            self.clients[service] = make(service, endpoint_url=aws.endpoint_url, config=config)
        return self.clients[service]

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_CLUSTER: self.settings.cluster_name, TAG_MANAGED_BY: MANAGED_BY_INFRA}

    def ours(self, tags: dict[str, str]) -> bool:
        return all(tags.get(k) == v for k, v in self.tags.items())

    def account(self) -> str:
        with about("sts", "caller-identity"):
            return str(self.client("sts").get_caller_identity()["Account"])

    def vpc_of_subnets(self) -> str | None:
        """The VPC of the configured subnets (all must share one), or None without subnets."""
        subnets = list(self.settings.ec2.subnets)
        if not subnets:
            return None
        with about("subnets", ",".join(subnets)):
            found = self.client("ec2").describe_subnets(SubnetIds=subnets)["Subnets"]
        vpcs = {s["VpcId"] for s in found}
        if len(vpcs) != 1:
            raise InfraAwsError(
                "subnets", ",".join(subnets), "VpcMismatch", f"subnets span VPCs {sorted(vpcs)}"
            )
        return str(vpcs.pop())

    # -- reading -------------------------------------------------------------------------------

    def actual(self, desired: Sequence[Resource]) -> dict[Key, dict[str, Any]]:
        """Every managed resource of the cluster, read back; refuse desired names held by others."""
        found: dict[Key, dict[str, Any]] = {}
        for kind, name in self.managed():
            with about(kind, name):
                found[(kind, name)] = self.read(kind, name)
        for resource in desired:
            if resource.kind == OBJECT:
                bucket = resource.name.split("/", 1)[0]
                if (BUCKET, bucket) in found:
                    with about(OBJECT, resource.name):
                        head = self.read_object(resource.name)
                    if head is not None:
                        found[resource.key] = head
            elif resource.key not in found and self.exists(resource.kind, resource.name):
                if resource.kind == OIDC:  # account-wide and often there already: used, never deleted
                    with about(OIDC, resource.name):
                        found[resource.key] = self.read(OIDC, resource.name)
                    continue
                raise InfraAwsError(
                    resource.kind,
                    resource.name,
                    "NotManaged",
                    f"exists without the tags {TAG_CLUSTER}={self.settings.cluster_name} and "
                    f"{TAG_MANAGED_BY}={MANAGED_BY_INFRA}; vkec2 infra will not adopt it",
                )
        return found

    def managed(self) -> list[Key]:
        """The keys of every resource carrying the cluster's managed-by tags."""
        keys: list[Key] = []
        s3, iam, ecr = self.client("s3"), self.client("iam"), self.client("ecr")
        with about(BUCKET, "*"):
            for bucket in s3.list_buckets().get("Buckets", []):
                name = bucket["Name"]
                if name.startswith(PREFIX):
                    tagging = _missing(
                        partial(s3.get_bucket_tagging, Bucket=name), "NoSuchTagSet", "NoSuchBucket"
                    )
                    if tagging and self.ours(_tagdict(tagging.get("TagSet"))):
                        keys.append((BUCKET, name))
        with about(POLICY, "*"):
            for page in iam.get_paginator("list_policies").paginate(Scope="Local"):
                for policy in page["Policies"]:
                    if policy["PolicyName"].startswith(PREFIX):
                        tags = iam.list_policy_tags(PolicyArn=policy["Arn"]).get("Tags")
                        if self.ours(_tagdict(tags)):
                            keys.append((POLICY, policy["PolicyName"]))
        with about(OIDC, GITHUB_OIDC_HOST):
            for provider in iam.list_open_id_connect_providers().get("OpenIDConnectProviderList", []):
                arn = provider["Arn"]
                if arn.endswith(f"/{GITHUB_OIDC_HOST}"):
                    tags = iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=arn).get("Tags")
                    if self.ours(_tagdict(tags)):
                        keys.append((OIDC, GITHUB_OIDC_HOST))
        with about(ROLE, "*"):
            for page in iam.get_paginator("list_roles").paginate():
                for role in page["Roles"]:
                    if role["RoleName"].startswith(PREFIX):
                        tags = iam.list_role_tags(RoleName=role["RoleName"]).get("Tags")
                        if self.ours(_tagdict(tags)):
                            keys.append((ROLE, role["RoleName"]))
        with about(PROFILE, "*"):
            for page in iam.get_paginator("list_instance_profiles").paginate():
                for profile in page["InstanceProfiles"]:
                    if profile["InstanceProfileName"].startswith(PREFIX):
                        full = iam.get_instance_profile(InstanceProfileName=profile["InstanceProfileName"])
                        if self.ours(_tagdict(full["InstanceProfile"].get("Tags"))):
                            keys.append((PROFILE, profile["InstanceProfileName"]))
        with about(GROUP, "*"):
            filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags.items()]
            for page in (
                self.client("ec2").get_paginator("describe_security_groups").paginate(Filters=filters)
            ):
                for group in page["SecurityGroups"]:
                    self.group_ids[group["GroupName"]] = group["GroupId"]
                    self.group_rules[group["GroupName"]] = group.get("IpPermissions", [])
                    keys.append((GROUP, group["GroupName"]))
        with about(REPOSITORY, "*"):
            for page in ecr.get_paginator("describe_repositories").paginate():
                for repo in page["repositories"]:
                    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags")
                    if self.ours(_tagdict(tags)):
                        keys.append((REPOSITORY, repo["repositoryName"]))
        return keys

    def exists(self, kind: str, name: str) -> bool:
        """Whether a resource of this kind and name exists at all (managed or not)."""
        iam = self.client("iam")
        calls: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
            BUCKET: (lambda: self.client("s3").head_bucket(Bucket=name), ("404", "NoSuchBucket", "NotFound")),
            POLICY: (lambda: iam.get_policy(PolicyArn=self.policy_arn(name)), ("NoSuchEntity",)),
            OIDC: (
                lambda: iam.get_open_id_connect_provider(OpenIDConnectProviderArn=self.oidc_arn()),
                ("NoSuchEntity",),
            ),
            ROLE: (lambda: iam.get_role(RoleName=name), ("NoSuchEntity",)),
            PROFILE: (lambda: iam.get_instance_profile(InstanceProfileName=name), ("NoSuchEntity",)),
            REPOSITORY: (
                lambda: self.client("ecr").describe_repositories(repositoryNames=[name]),
                ("RepositoryNotFoundException",),
            ),
        }
        if kind == GROUP:
            filters = [{"Name": "group-name", "Values": [name]}]
            with about(kind, name):
                return bool(self.client("ec2").describe_security_groups(Filters=filters)["SecurityGroups"])
        call, codes = calls[kind]
        with about(kind, name):
            return _missing(call, *codes) is not None

    def policy_arn(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:policy/{name}"

    def oidc_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:oidc-provider/{GITHUB_OIDC_HOST}"

    @property
    def account_id(self) -> str:
        if "_account" not in self.clients:
            self.clients["_account"] = self.account()
        return str(self.clients["_account"])

    def read(self, kind: str, name: str) -> dict[str, Any]:
        """The compared properties of one existing resource (the keys :func:`desired` draws)."""
        return _READERS[kind](self, name)

    def read_object(self, path: str) -> dict[str, Any] | None:
        bucket, key = path.split("/", 1)
        head = _missing(
            lambda: self.client("s3").head_object(Bucket=bucket, Key=key), "404", "NoSuchKey", "NotFound"
        )
        return None if head is None else {"sha256": head.get("Metadata", {}).get("sha256")}


def _bucket(aws: InfraAws, name: str) -> dict[str, Any]:
    s3 = aws.client("s3")
    versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
    enc = _missing(
        lambda: s3.get_bucket_encryption(Bucket=name), "ServerSideEncryptionConfigurationNotFoundError"
    )
    rules = (enc or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithm = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] if rules else None
    block = _missing(lambda: s3.get_public_access_block(Bucket=name), "NoSuchPublicAccessBlockConfiguration")
    config = (block or {}).get("PublicAccessBlockConfiguration", {})
    keys = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    policy = _missing(lambda: s3.get_bucket_policy(Bucket=name), "NoSuchBucketPolicy")
    statements = json.loads(policy["Policy"]).get("Statement", []) if policy else []
    return {
        "versioning": versioning,
        "encryption": algorithm,
        "public_access_blocked": all(config.get(k) is True for k in keys),
        "tls_only": any(s.get("Sid") == TLS_ONLY_SID for s in statements),
    }


def _policy(aws: InfraAws, name: str) -> dict[str, Any]:
    iam = aws.client("iam")
    arn = aws.policy_arn(name)
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return {"document": _doc(document)}


def _doc(document: Any) -> Any:
    """IAM documents come back as dicts (botocore decodes them) or, from some servers, as JSON text."""
    if isinstance(document, str):
        from urllib.parse import unquote

        return json.loads(unquote(document))
    return document


def _oidc(aws: InfraAws, name: str) -> dict[str, Any]:
    found = aws.client("iam").get_open_id_connect_provider(OpenIDConnectProviderArn=aws.oidc_arn())
    return {"client_ids": sorted(found.get("ClientIDList", []))}


def _role(aws: InfraAws, name: str) -> dict[str, Any]:
    iam = aws.client("iam")
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    inline = {
        p: _doc(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"])
        for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
    }
    attached = sorted(
        p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    )
    return {"trust": _doc(trust), "inline": inline, "attached": attached}


def _profile(aws: InfraAws, name: str) -> dict[str, Any]:
    found = aws.client("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    return {"roles": sorted(r["RoleName"] for r in found.get("Roles", []))}


def _group(aws: InfraAws, name: str) -> dict[str, Any]:
    found = aws.client("ec2").describe_security_groups(GroupIds=[aws.group_ids[name]])["SecurityGroups"][0]
    ingress: list[dict[str, Any]] = []
    for perm in found.get("IpPermissions", []):
        base = {"protocol": perm.get("IpProtocol"), "port": perm.get("FromPort")}
        if perm.get("FromPort") != perm.get("ToPort"):
            base["to_port"] = perm.get("ToPort")
        ingress += [{**base, "group": p["GroupId"]} for p in perm.get("UserIdGroupPairs", [])]
        ingress += [{**base, "cidr": r["CidrIp"]} for r in perm.get("IpRanges", [])]
        ingress += [{**base, "cidr": r["CidrIpv6"]} for r in perm.get("Ipv6Ranges", [])]
    return {"vpc_id": found["VpcId"], "ingress": ingress}


def _repository(aws: InfraAws, name: str) -> dict[str, Any]:
    ecr = aws.client("ecr")
    repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    policy = _missing(
        lambda: ecr.get_lifecycle_policy(repositoryName=name), "LifecyclePolicyNotFoundException"
    )
    return {
        "scan_on_push": bool(repo.get("imageScanningConfiguration", {}).get("scanOnPush")),
        "immutable": repo.get("imageTagMutability") == "IMMUTABLE",
        "lifecycle": json.loads(policy["lifecyclePolicyText"]) if policy else None,
    }


_READERS: dict[str, Callable[[InfraAws, str], dict[str, Any]]] = {
    BUCKET: _bucket,
    POLICY: _policy,
    OIDC: _oidc,
    ROLE: _role,
    PROFILE: _profile,
    GROUP: _group,
    REPOSITORY: _repository,
}
