"""``vkec2 infra``: the AWS prerequisites — ``iam-policy`` prints the workers' policy; ``plan``,
``apply`` and ``destroy`` manage the cluster's resources (docs/deployment.md, "AWS prerequisites").

The policy comes from :func:`vkec2.domain.iampolicy.workers_policy`: RunInstances only with the
AMIs, subnets, security groups, key pairs, instance types and instance profiles the configuration
and its ``allowlists`` name, tag conditions on the cluster's instances and ``iam:PassRole`` limited
to the instance roles. The account (``--account``, else the placeholder ``ACCOUNT``), the VPC
(``--vpc``, adds ``ec2:Vpc`` conditions) and the roles (``--role``, default: the instance
profiles' names) are not in the configuration and are given on the command line. The JSON goes to
stdout, ready for ``aws iam put-role-policy --policy-document file://...``. ``plan``/``apply``/
``destroy`` are thin: the resources are drawn by :mod:`vkec2.domain.infra`, compared by
:mod:`vkec2.domain.infradiff` and read and written by :mod:`vkec2.ec2.infra` and
:mod:`vkec2.ec2.infra_apply` (in :mod:`vkec2.cli.infra_commands`).
"""

from __future__ import annotations

import json
import re

import click

from vkec2.cli.common import Failed, Group
from vkec2.cli.infra_commands import apply, destroy, plan
from vkec2.config import load_settings
from vkec2.domain.iampolicy import ACCOUNT_PLACEHOLDER, PolicyInputs, workers_policy
from vkec2.errors import ConfigError

_ACCOUNT_RE = re.compile(r"\d{12}")
_VPC_RE = re.compile(r"vpc-[0-9a-f]{1,32}")
_ROLE_RE = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)


@click.group("infra", cls=Group)
def infra() -> None:
    """what the fleet needs from AWS: 'vkec2 infra iam-policy|plan|apply|destroy'"""


for _command in (plan, apply, destroy):
    infra.add_command(_command)


def _checked(value: str | None, pattern: re.Pattern[str], what: str, param: str) -> None:
    if value is not None and not pattern.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not {what}", param_hint=param)


@infra.command("iam-policy", short_help="print the workers' least-privilege IAM policy (JSON)")
@click.option("--config", metavar="FILE", help="configuration file (default: $VKEC2_CONFIG)")
@click.option("--account", metavar="ID", help=f"the AWS account ID (default: {ACCOUNT_PLACEHOLDER})")
@click.option("--vpc", metavar="VPC_ID", help="the fleet's VPC: subnets, groups and ENIs must be in it")
@click.option("--role", "roles", metavar="NAME", multiple=True, help="an instance role to pass (repeatable)")
def iam_policy(config: str | None, account: str | None, vpc: str | None, roles: tuple[str, ...]) -> None:
    """Print the IAM policy the workers need for this configuration (docs/deployment.md)."""
    _checked(account, _ACCOUNT_RE, "a 12-digit AWS account ID", "--account")
    _checked(vpc, _VPC_RE, "a VPC ID like vpc-0123abcd", "--vpc")
    for role in roles:
        _checked(role, _ROLE_RE, "an IAM role name", "--role")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise Failed(f"vkec2 infra iam-policy: {exc.message}") from exc
    inputs = PolicyInputs(account=account or ACCOUNT_PLACEHOLDER, vpc_id=vpc, roles=roles)
    click.echo(json.dumps(workers_policy(settings, inputs), indent=2))
