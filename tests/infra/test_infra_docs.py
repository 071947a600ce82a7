"""docs/deployment.md's "AWS prerequisites: vkec2 infra" shows the documents the code draws."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vkec2.config import Settings
from vkec2.domain.infra import (
    ec2_trust,
    github_trust,
    instance_role_policy,
    irsa_trust,
    lifecycle_policy,
    names,
    pipeline_policy,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
ACCOUNT = "123456789012"


def test_the_page_prints_the_documents() -> None:
    text = DOC.read_text()
    section = text.split("## AWS prerequisites: vkec2 infra", 1)[1].split("\n## ", 1)[0]
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.S)]
    bucket = names(Settings.model_validate({"cluster_name": "prod"}), ACCOUNT).bucket
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/EXAMPLE"
    drawn: list[dict[str, Any]] = [
        instance_role_policy(bucket),
        ec2_trust(),
        irsa_trust(provider, "vkec2/vkec2-worker"),
        pipeline_policy(f"arn:aws:ecr:us-west-2:{ACCOUNT}:repository/vkec2-prod", bucket),
        github_trust(ACCOUNT, "acme/vkec2"),
        lifecycle_policy(30, 7),
    ]
    assert shown == drawn
