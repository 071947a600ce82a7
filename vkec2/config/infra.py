"""The ``infra`` section: what ``vkec2 infra plan|apply|destroy`` creates besides the fleet itself.

The AWS prerequisites (artifact bucket, instance role and profile, the agent's security group, the
fleet's managed policy and IRSA role, the ECR repository and, behind a flag, the GitHub OIDC
pipeline role) are drawn by :mod:`vkec2.domain.infra`; this section holds the few choices that are
not already elsewhere in the configuration: the VPC and the fleet's source for the agent port, the
ECR repository's name and its retention. Command-line options override these values.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from vkec2.config.shapes import Section

_VPC_RE = re.compile(r"vpc-[0-9a-f]{1,32}")
_REPO_RE = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")


class InfraSettings(Section):
    """Choices for ``vkec2 infra``; the rest comes from the cluster name, region and agent port."""

    vpc_id: str | None = Field(
        default=None, description="The agent security group's VPC (default: the VPC of ec2.subnets)."
    )
    fleet_source: str | None = Field(
        default=None,
        description="Who may dial the agent port: a security group ID (the workers') or a CIDR.",
    )
    ecr_repository: str | None = Field(default=None, description="ECR repository (default: vkec2-<cluster>).")
    ecr_keep_tagged: int = Field(default=30, ge=1, le=10000, description="Tagged images kept per repository.")
    ecr_untagged_days: int = Field(
        default=7, ge=1, le=3650, description="Days before untagged images expire."
    )

    @field_validator("vpc_id")
    @classmethod
    def _vpc(cls, value: str | None) -> str | None:
        if value is not None and not _VPC_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a VPC ID like vpc-0123abcd")
        return value

    @field_validator("ecr_repository")
    @classmethod
    def _repo(cls, value: str | None) -> str | None:
        if value is not None and not (2 <= len(value) <= 256 and _REPO_RE.fullmatch(value)):
            raise ValueError(f"{value!r} is not an ECR repository name")
        return value
