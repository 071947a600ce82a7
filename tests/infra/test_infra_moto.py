"""``vkec2 infra plan|apply|destroy`` against moto's server over HTTP: S3, IAM, EC2, ECR and STS.

Apply makes the cluster's resources with their settings and tags, a second apply and a plan
change nothing, ``--with-pipeline`` (and IRSA) add exactly their roles and the OIDC provider, a
desired name held by an untagged resource is refused, and destroy removes only what carries the
cluster's managed-by tags: an untagged look-alike and another cluster's resources stay.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from vkec2.cli.main import main as vkec2
from vkec2.config import Settings
from vkec2.contract import TAG_CLUSTER, TAG_MANAGED_BY
from vkec2.ec2.infra import InfraAws

REGION = "us-west-2"


class Cluster:
    """A cluster's configuration on moto: a VPC with a subnet and the fleet's security group."""

    def __init__(self, moto_url: str, tmp_path: Path) -> None:
        self.name = f"t-{uuid.uuid4().hex[:8]}"
        self.moto_url = moto_url
        ec2 = self.client("ec2")
        self.vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
        self.fleet_sg = ec2.create_security_group(GroupName="workers", Description="w", VpcId=self.vpc)[
            "GroupId"
        ]
        config = {
            "cluster_name": self.name,
            "region": REGION,
            "aws": {"endpoint_url": moto_url, "max_attempts": 1},
            "ec2": {"subnets": [subnet]},
            "infra": {"fleet_source": self.fleet_sg},
        }
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.artifact = tmp_path / "vkec2-agent.tar.gz"
        self.artifact.write_bytes(b"agent build")
        self.sha = hashlib.sha256(b"agent build").hexdigest()
        self.prefix = f"vkec2-{self.name}"

    def client(self, service: str) -> Any:
        make: Callable[..., Any] = boto3.client  # several services: typed where used
        return make(service, region_name=REGION, endpoint_url=self.moto_url)

    def managed(self) -> list[tuple[str, str]]:
        settings = Settings.model_validate(yaml.safe_load(self.config.read_text()))
        return InfraAws(settings).managed()


@pytest.fixture
def cluster(moto_url: str, tmp_path: Path) -> Cluster:
    return Cluster(moto_url, tmp_path)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(command: str, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = vkec2(["infra", command, "--config", str(cluster.config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_apply_is_idempotent_and_destroy_takes_only_the_clusters(cluster: Cluster, run: Run) -> None:
    code, out, err = run("apply", "--yes", "--agent-artifact", str(cluster.artifact))
    assert code == 0, err
    assert "applied" in out and "7 to create" in out

    s3, iam, ecr, ec2 = (cluster.client(s) for s in ("s3", "iam", "ecr", "ec2"))
    bucket = f"{cluster.prefix}-artifacts-123456789012"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    head = s3.head_object(Bucket=bucket, Key=f"agent/{cluster.sha}/vkec2-agent.tar.gz")
    assert head["Metadata"]["sha256"] == cluster.sha

    role = iam.get_role(RoleName=f"{cluster.prefix}-agent")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    inline = iam.get_role_policy(RoleName=f"{cluster.prefix}-agent", PolicyName="agent")["PolicyDocument"]
    assert inline["Statement"] == [
        {
            "Sid": "ReadAgentArtifact",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/agent/*",
        }
    ]
    profile = iam.get_instance_profile(InstanceProfileName=f"{cluster.prefix}-agent")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [f"{cluster.prefix}-agent"]

    group = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"{cluster.prefix}-agent"]}]
    )
    (sg,) = group["SecurityGroups"]
    assert sg["VpcId"] == cluster.vpc  # the configured subnets' VPC
    (perm,) = sg["IpPermissions"]
    assert (perm["FromPort"], perm["ToPort"], perm["IpRanges"]) == (8200, 8200, [])
    assert [p["GroupId"] for p in perm["UserIdGroupPairs"]] == [cluster.fleet_sg]

    repo = ecr.describe_repositories(repositoryNames=[cluster.prefix])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE" and repo["imageScanningConfiguration"]["scanOnPush"]
    rules = json.loads(ecr.get_lifecycle_policy(repositoryName=cluster.prefix)["lifecyclePolicyText"])[
        "rules"
    ]
    assert [(r["selection"]["tagStatus"], r["selection"]["countNumber"]) for r in rules] == [
        ("untagged", 7),
        ("tagged", 30),
    ]

    code, out, err = run("apply", "--yes", "--agent-artifact", str(cluster.artifact))
    assert (code, out.splitlines()[-1]) == (0, "no changes"), err
    assert "applied" not in out
    code, out, _ = run("plan", "--ecr-keep-tagged", "5")  # a changed rule is shown as a JSON diff
    assert f"~ update    ecr-repository       {cluster.prefix}  (lifecycle)" in out
    diff = [line.strip() for line in out.splitlines()]
    assert '-"countNumber":30,' in [d.replace(" ", "") for d in diff]
    assert '+"countNumber":5,' in [d.replace(" ", "") for d in diff]
    assert "1 to update" in out

    # Look-alikes: untagged with the cluster's prefix, and another cluster's managed resources.
    other = {TAG_CLUSTER: "someone-else", TAG_MANAGED_BY: "infra"}
    s3.create_bucket(
        Bucket=f"{cluster.prefix}-lookalike", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    s3.create_bucket(Bucket="vkec2-someone-else-x", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_tagging(
        Bucket="vkec2-someone-else-x", Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in other.items()]}
    )
    trust = json.dumps(role["AssumeRolePolicyDocument"])
    iam.create_role(RoleName=f"{cluster.prefix}-lookalike", AssumeRolePolicyDocument=trust)
    iam.create_role(
        RoleName="vkec2-someone-else-agent",
        AssumeRolePolicyDocument=trust,
        Tags=[{"Key": k, "Value": v} for k, v in other.items()],
    )
    ecr.create_repository(
        repositoryName="vkec2-someone-else", tags=[{"Key": k, "Value": v} for k, v in other.items()]
    )

    code, out, err = run("destroy", "--yes")
    assert code == 0, err
    assert "6 to delete" in out and "destroyed" in out
    assert cluster.managed() == []
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {f"{cluster.prefix}-lookalike", "vkec2-someone-else-x"} <= buckets and bucket not in buckets
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert {f"{cluster.prefix}-lookalike", "vkec2-someone-else-agent"} <= roles
    assert f"{cluster.prefix}-agent" not in roles
    assert [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]] == [
        "vkec2-someone-else"
    ]
    assert ec2.describe_security_groups(GroupIds=[cluster.fleet_sg])["SecurityGroups"]  # not ours: stays
    assert run("destroy", "--yes")[1].splitlines()[-1] == "no changes"


def test_pipeline_and_irsa_add_exactly_their_roles(cluster: Cluster, run: Run) -> None:
    assert run("apply", "--yes")[0] == 0
    oidc = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/ABC"
    extra = ["--with-pipeline", "--github-repo", "acme/fleet", "--oidc-provider-arn", oidc]
    extra += ["--service-account", "vkec2/vkec2-worker"]
    code, out, err = run("plan", *extra)
    assert code == 0, err
    created = [line.split()[2:4] for line in out.splitlines() if line.startswith("+ create")]
    assert sorted(created) == [
        ["iam-oidc-provider", "token.actions.githubusercontent.com"],
        ["iam-role", f"{cluster.prefix}-fleet"],
        ["iam-role", f"{cluster.prefix}-pipeline"],
    ]
    assert "3 to create" in out and "update" not in out.splitlines()[-1]
    assert run("apply", "--yes", *extra)[0] == 0

    iam = cluster.client("iam")
    pipeline = iam.get_role(RoleName=f"{cluster.prefix}-pipeline")["Role"]["AssumeRolePolicyDocument"]
    condition = pipeline["Statement"][0]["Condition"]
    assert condition["StringLike"] == {"token.actions.githubusercontent.com:sub": "repo:acme/fleet:*"}
    grants = iam.get_role_policy(RoleName=f"{cluster.prefix}-pipeline", PolicyName="pipeline")[
        "PolicyDocument"
    ]
    resources = {s["Sid"]: s["Resource"] for s in grants["Statement"]}
    assert resources == {
        "EcrLogin": "*",
        "PushTheFleetImage": f"arn:aws:ecr:us-west-2:123456789012:repository/{cluster.prefix}",
        "WriteAgentArtifacts": f"arn:aws:s3:::{cluster.prefix}-artifacts-123456789012/agent/*",
    }
    providers = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    assert [p["Arn"].rsplit("/", 1)[-1] for p in providers] == ["token.actions.githubusercontent.com"]
    fleet = iam.get_role(RoleName=f"{cluster.prefix}-fleet")["Role"]["AssumeRolePolicyDocument"]["Statement"][
        0
    ]
    assert fleet["Condition"]["StringEquals"] == {
        "oidc.eks.us-west-2.amazonaws.com/id/ABC:aud": "sts.amazonaws.com",
        "oidc.eks.us-west-2.amazonaws.com/id/ABC:sub": "system:serviceaccount:vkec2:vkec2-worker",
    }
    attached = iam.list_attached_role_policies(RoleName=f"{cluster.prefix}-fleet")["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == [f"{cluster.prefix}-fleet"]

    # Without the flags, the pipeline's and IRSA's resources are planned for deletion, nothing else.
    out = run("plan")[1]
    deleted = sorted(
        line.split()[2] + " " + line.split()[3] for line in out.splitlines() if line.startswith("- ")
    )
    assert deleted == [
        "iam-oidc-provider token.actions.githubusercontent.com",
        f"iam-role {cluster.prefix}-fleet",
        f"iam-role {cluster.prefix}-pipeline",
    ]
    assert run("destroy", "--yes")[0] == 0
    assert cluster.managed() == []


def test_refusals_name_the_problem(cluster: Cluster, run: Run) -> None:
    code, _, err = run("plan", "--fleet-source", "0.0.0.0/0")
    assert code == 1 and "whole internet" in err and "Traceback" not in err
    assert run("plan", "--fleet-source", "0.0.0.0/0", "--insecure-open-agent-port")[0] == 0
    code, _, err = run("plan", "--with-pipeline")
    assert code == 1 and "--github-repo" in err
    # GitHub's OIDC provider, account-wide, is used when it exists already (and not destroyed).
    cluster.client("iam").create_open_id_connect_provider(
        Url="https://token.actions.githubusercontent.com",
        ClientIDList=["sts.amazonaws.com"],
        ThumbprintList=["a" * 40],
    )
    code, out, err = run("plan", "--with-pipeline", "--github-repo", "acme/fleet")
    assert code == 0, err
    assert "= unchanged iam-oidc-provider    token.actions.githubusercontent.com" in out
    # A desired name held by an untagged resource is not adopted.
    cluster.client("ecr").create_repository(repositoryName=cluster.prefix)
    code, _, err = run("apply", "--yes")
    assert code == 1 and f"ecr-repository {cluster.prefix}: NotManaged" in err and "Traceback" not in err
    assert cluster.managed() == []
