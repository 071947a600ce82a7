"""``vkec2 infra``'s writing side: carry out a plan's changes with boto3, one resource at a time.

:func:`carry_out` walks the :class:`~vkec2.domain.infradiff.Change` list in order (creation order,
then deletions dependants first) and makes AWS match: creates tag every resource with the cluster
and ``vkec2.io/managed-by=infra`` at creation, updates rewrite only the properties that differ
(a new default version for a managed policy, the trust and inline policies of a role, the rules
of a security group, an ECR repository's settings and lifecycle policy), and deletes empty what
has to be empty first (an instance profile's role, a role's policies, a policy's versions and
attachments, a bucket's object versions). Each call about a resource is wrapped by
:func:`vkec2.ec2.infra.about`, so a failure names that resource and AWS's error code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
)
from vkec2.domain.infradiff import CREATE, DELETE, UNCHANGED, UPDATE, Change
from vkec2.ec2.infra import TLS_ONLY_SID, InfraAws, InfraAwsError, about

#: The certificate thumbprints AWS documents for GitHub's OIDC issuer (IAM no longer checks them for
#: GitHub, but older API versions require the list).
GITHUB_THUMBPRINTS = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
_PUBLIC_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def carry_out(aws: InfraAws, changes: Sequence[Change], artifact: Path | None = None) -> None:
    """Make AWS match the plan; stops at the first failure (an :class:`InfraAwsError`)."""
    for change in changes:
        if change.action == UNCHANGED:
            continue
        with about(change.kind, change.name):
            if change.action == DELETE:
                _DELETERS[change.kind](aws, change.name)
            elif change.kind == OBJECT:
                _upload(aws, change, artifact)
            else:
                _WRITERS[change.kind](aws, change)


def _tags(aws: InfraAws, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in aws.tags.items()]


def _after(change: Change) -> dict[str, Any]:
    assert change.after is not None
    return change.after


def _dump(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


# -- writers -----------------------------------------------------------------------------------


def _bucket(aws: InfraAws, change: Change) -> None:
    s3, name = aws.client("s3"), change.name
    if change.action == CREATE:
        where = {} if aws.settings.region == "us-east-1" else {"LocationConstraint": aws.settings.region}
        s3.create_bucket(Bucket=name, **({"CreateBucketConfiguration": where} if where else {}))
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tags(aws)})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=_PUBLIC_BLOCK)
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": _after(change)["encryption"]}}
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [rule]})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": _after(change)["versioning"]})
    if not _after(change)["tls_only"]:
        if (change.before or {}).get("tls_only"):
            s3.delete_bucket_policy(Bucket=name)
        return
    deny = {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:{aws.partition}:s3:::{name}", f"arn:{aws.partition}:s3:::{name}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    s3.put_bucket_policy(Bucket=name, Policy=_dump({"Version": "2012-10-17", "Statement": [deny]}))


def _upload(aws: InfraAws, change: Change, artifact: Path | None) -> None:
    if artifact is None:
        raise InfraAwsError(OBJECT, change.name, "NoArtifact", "no --agent-artifact file to upload")
    bucket, key = change.name.split("/", 1)
    with artifact.open("rb") as body:
        aws.client("s3").put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            Metadata={"sha256": _after(change)["sha256"]},
            ServerSideEncryption="AES256",
            Tagging="&".join(f"{k}={v}" for k, v in aws.tags.items()),
        )


def _policy(aws: InfraAws, change: Change) -> None:
    iam, document = aws.client("iam"), _dump(_after(change)["document"])
    if change.action == CREATE:
        iam.create_policy(PolicyName=change.name, PolicyDocument=document, Tags=_tags(aws))
        return
    arn = aws.policy_arn(change.name)
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
    if len(versions) >= 5 and old:  # IAM keeps at most five versions
        iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=document, SetAsDefault=True)


def _oidc(aws: InfraAws, change: Change) -> None:
    iam, wanted = aws.client("iam"), _after(change)["client_ids"]
    if change.action == CREATE:
        iam.create_open_id_connect_provider(
            Url=f"https://{GITHUB_OIDC_HOST}",
            ClientIDList=wanted,
            ThumbprintList=GITHUB_THUMBPRINTS,
            Tags=_tags(aws),
        )
        return
    have = (change.before or {}).get("client_ids") or []
    for client_id in sorted(set(wanted) - set(have)):
        iam.add_client_to_open_id_connect_provider(
            OpenIDConnectProviderArn=aws.oidc_arn(), ClientID=client_id
        )


def _role(aws: InfraAws, change: Change) -> None:
    iam, spec, name = aws.client("iam"), _after(change), change.name
    before = change.before or {"inline": {}, "attached": []}
    if change.action == CREATE:
        iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=_dump(spec["trust"]),
            Description=f"vkec2 cluster {aws.settings.cluster_name} (vkec2 infra)",
            Tags=_tags(aws),
        )
    elif json.dumps(before.get("trust"), sort_keys=True) != json.dumps(spec["trust"], sort_keys=True):
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=_dump(spec["trust"]))
    for policy, document in spec["inline"].items():
        if (before.get("inline") or {}).get(policy) != document:
            iam.put_role_policy(RoleName=name, PolicyName=policy, PolicyDocument=_dump(document))
    for policy in set(before.get("inline") or {}) - set(spec["inline"]):
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for arn in set(spec["attached"]) - set(before.get("attached") or []):
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    for arn in set(before.get("attached") or []) - set(spec["attached"]):
        iam.detach_role_policy(RoleName=name, PolicyArn=arn)


def _profile(aws: InfraAws, change: Change) -> None:
    iam, name = aws.client("iam"), change.name
    if change.action == CREATE:
        iam.create_instance_profile(InstanceProfileName=name, Tags=_tags(aws))
    have = set((change.before or {}).get("roles") or [])
    for role in have - set(_after(change)["roles"]):
        iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role)
    for role in set(_after(change)["roles"]) - have:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)


def _permission(rule: dict[str, Any]) -> dict[str, Any]:
    perm: dict[str, Any] = {"IpProtocol": rule["protocol"], "FromPort": rule["port"], "ToPort": rule["port"]}
    source = rule.get("group") or rule.get("cidr", "")
    if "group" in rule:
        perm["UserIdGroupPairs"] = [{"GroupId": source, "Description": "the vkec2 fleet"}]
    elif ":" in source:
        perm["Ipv6Ranges"] = [{"CidrIpv6": source, "Description": "the vkec2 fleet"}]
    else:
        perm["IpRanges"] = [{"CidrIp": source, "Description": "the vkec2 fleet"}]
    return perm


def _group(aws: InfraAws, change: Change) -> None:
    ec2, spec, name = aws.client("ec2"), _after(change), change.name
    if change.action == UPDATE and (change.before or {}).get("vpc_id") != spec["vpc_id"]:
        raise InfraAwsError(
            GROUP, name, "VpcChange", f"is in {(change.before or {}).get('vpc_id')}; destroy it first"
        )
    if change.action == CREATE:
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=f"vkec2 agents of cluster {aws.settings.cluster_name}: agent port from the fleet",
            VpcId=spec["vpc_id"],
            TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(aws)}],
        )["GroupId"]
        aws.group_ids[name] = group_id
    else:
        group_id = aws.group_ids[name]
        rules = aws.group_rules.get(name) or []
        if rules:
            ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=rules)
    ec2.authorize_security_group_ingress(
        GroupId=group_id, IpPermissions=[_permission(r) for r in spec["ingress"]]
    )


def _repository(aws: InfraAws, change: Change) -> None:
    ecr, spec, name = aws.client("ecr"), _after(change), change.name
    mutability = "IMMUTABLE" if spec["immutable"] else "MUTABLE"
    if change.action == CREATE:
        ecr.create_repository(
            repositoryName=name,
            imageTagMutability=mutability,
            imageScanningConfiguration={"scanOnPush": spec["scan_on_push"]},
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=_tags(aws, "Key", "Value"),
        )
    else:
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability=mutability)
        ecr.put_image_scanning_configuration(
            repositoryName=name, imageScanningConfiguration={"scanOnPush": spec["scan_on_push"]}
        )
    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=_dump(spec["lifecycle"]))


_WRITERS: dict[str, Callable[[InfraAws, Change], None]] = {
    BUCKET: _bucket,
    POLICY: _policy,
    OIDC: _oidc,
    ROLE: _role,
    PROFILE: _profile,
    GROUP: _group,
    REPOSITORY: _repository,
}


# -- deleters ----------------------------------------------------------------------------------


def _delete_bucket(aws: InfraAws, name: str) -> None:
    s3 = aws.client("s3")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
        ]
        if doomed:
            s3.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def _delete_policy(aws: InfraAws, name: str) -> None:
    iam, arn = aws.client("iam"), aws.policy_arn(name)
    entities = iam.list_entities_for_policy(PolicyArn=arn)
    for role in entities.get("PolicyRoles", []):
        iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
    for user in entities.get("PolicyUsers", []):
        iam.detach_user_policy(UserName=user["UserName"], PolicyArn=arn)
    for group in entities.get("PolicyGroups", []):
        iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=arn)
    for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not version["IsDefaultVersion"]:
            iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
    iam.delete_policy(PolicyArn=arn)


def _delete_oidc(aws: InfraAws, name: str) -> None:
    aws.client("iam").delete_open_id_connect_provider(OpenIDConnectProviderArn=aws.oidc_arn())


def _delete_role(aws: InfraAws, name: str) -> None:
    iam = aws.client("iam")
    for profile in iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
        iam.remove_role_from_instance_profile(
            InstanceProfileName=profile["InstanceProfileName"], RoleName=name
        )
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    iam.delete_role(RoleName=name)


def _delete_profile(aws: InfraAws, name: str) -> None:
    iam = aws.client("iam")
    for role in iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"].get("Roles", []):
        iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
    iam.delete_instance_profile(InstanceProfileName=name)


def _delete_group(aws: InfraAws, name: str) -> None:
    aws.client("ec2").delete_security_group(GroupId=aws.group_ids[name])


def _delete_repository(aws: InfraAws, name: str) -> None:
    aws.client("ecr").delete_repository(repositoryName=name, force=True)


_DELETERS: dict[str, Callable[[InfraAws, str], None]] = {
    BUCKET: _delete_bucket,
    POLICY: _delete_policy,
    OIDC: _delete_oidc,
    ROLE: _delete_role,
    PROFILE: _delete_profile,
    GROUP: _delete_group,
    REPOSITORY: _delete_repository,
}
