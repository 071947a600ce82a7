"""``vkec2 infra plan|apply|destroy``: the cluster's AWS prerequisites, planned, made and removed.

Thin: the options and the configuration become :class:`~vkec2.domain.infra.InfraInputs`, the
resources come from :func:`vkec2.domain.infra.desired`, the plan from
:func:`vkec2.domain.infradiff.plan` against what :class:`vkec2.ec2.infra.InfraAws` reads back, and
:func:`vkec2.ec2.infra_apply.carry_out` makes the changes. ``plan`` only prints; ``apply`` prints
the plan, asks (unless ``--yes``) and applies — a second run prints "no changes"; ``destroy``
removes what carries the cluster's ``vkec2.io/managed-by=infra`` tags and nothing else. Failures
print the resource and AWS's error code, exit 1, no traceback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vkec2.cli.common import Command, Failed
from vkec2.config import Settings, load_settings
from vkec2.domain.infra import Artifact, InfraInputError, InfraInputs, desired
from vkec2.domain.infradiff import Change, deletions, pending, render
from vkec2.domain.infradiff import plan as make_plan
from vkec2.ec2.infra import InfraAws, InfraAwsError
from vkec2.ec2.infra_apply import carry_out
from vkec2.errors import ConfigError


def _options(command: Callable[..., None]) -> Callable[..., None]:
    """The options plan and apply share (what to manage, and with which inputs)."""
    options = [
        click.option("--config", metavar="FILE", help="configuration file (default: $VKEC2_CONFIG)"),
        click.option(
            "--vpc", metavar="VPC_ID", help="the agent group's VPC (default: infra.vpc_id, ec2.subnets' VPC)"
        ),
        click.option(
            "--fleet-source",
            metavar="SG_OR_CIDR",
            help="who may dial the agent port (default: infra.fleet_source)",
        ),
        click.option("--insecure-open-agent-port", is_flag=True, help="accept 0.0.0.0/0 as --fleet-source"),
        click.option(
            "--with-pipeline", is_flag=True, help="also the GitHub OIDC provider and the pipeline role"
        ),
        click.option("--github-repo", metavar="OWNER/NAME", help="the repository whose workflows may push"),
        click.option(
            "--oidc-provider-arn", metavar="ARN", help="the EKS cluster's OIDC provider (IRSA role)"
        ),
        click.option("--service-account", metavar="NS/NAME", help="the workers' service account (IRSA role)"),
        click.option(
            "--agent-artifact", metavar="PATH", type=click.Path(exists=True, dir_okay=False, path_type=Path)
        ),
        click.option("--ecr-keep-tagged", type=click.IntRange(1, 10000), help="tagged images ECR keeps"),
        click.option("--ecr-untagged-days", type=click.IntRange(1, 3650), help="days untagged images live"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _settings(config: str | None, what: str, **infra: Any) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise Failed(f"vkec2 infra {what}: {exc.message}") from exc
    update = {k: v for k, v in infra.items() if v is not None}
    return (
        settings.model_copy(update={"infra": settings.infra.model_copy(update=update)})
        if update
        else settings
    )


def _artifact(path: Path | None) -> Artifact | None:
    """The file's name and sha256 (checked against a ``PATH.sha256`` file next to it, if any)."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as body:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        claimed = sidecar.read_text().split()[:1]
        if claimed != [sha]:
            raise Failed(
                f"vkec2 infra: {path} has sha256 {sha}, but {sidecar} says {' '.join(claimed) or 'nothing'}"
            )
    return Artifact(filename=path.name, sha256=sha)


def _planned(what: str, opts: dict[str, Any]) -> tuple[InfraAws, list[Change]]:
    settings = _settings(
        opts["config"],
        what,
        ecr_keep_tagged=opts["ecr_keep_tagged"],
        ecr_untagged_days=opts["ecr_untagged_days"],
    )
    aws = InfraAws(settings)
    try:
        vpc = opts["vpc"] or settings.infra.vpc_id or aws.vpc_of_subnets()
        if vpc is None:
            raise Failed(f"vkec2 infra {what}: no VPC: give --vpc, infra.vpc_id or ec2.subnets")
        source = opts["fleet_source"] or settings.infra.fleet_source
        if source is None:
            raise Failed(
                f"vkec2 infra {what}: no source for the agent port: give --fleet-source or infra.fleet_source"
            )
        inputs = InfraInputs(
            account=aws.account_id,
            vpc_id=vpc,
            fleet_source=source,
            allow_open=opts["insecure_open_agent_port"],
            with_pipeline=opts["with_pipeline"],
            github_repo=opts["github_repo"],
            oidc_provider_arn=opts["oidc_provider_arn"],
            service_account=opts["service_account"],
            artifact=_artifact(opts["agent_artifact"]),
            # A plaintext endpoint is a local double (moto): a TLS-only bucket would refuse every call.
            tls_only=not (settings.aws.endpoint_url or "").startswith("http://"),
        )
        resources = desired(settings, inputs)
        return aws, make_plan(resources, aws.actual(resources))
    except InfraInputError as exc:
        raise Failed(f"vkec2 infra {what}: {exc}") from None
    except InfraAwsError as exc:
        raise Failed(f"vkec2 infra {what}: {exc}") from None


@click.command("plan", cls=Command, short_help="print what apply would create, update or delete")
@_options
def plan(**opts: Any) -> None:
    """Print the changes 'vkec2 infra apply' would make (policy documents as JSON diffs)."""
    click.echo(render(_planned("plan", opts)[1]))


@click.command("apply", cls=Command, short_help="create or update the cluster's AWS prerequisites")
@_options
@click.option("--yes", is_flag=True, help="do not ask before changing anything")
def apply(yes: bool, **opts: Any) -> None:
    """Make the cluster's AWS prerequisites match the configuration; idempotent."""
    aws, changes = _planned("apply", opts)
    click.echo(render(changes))
    if not pending(changes):
        return
    if not yes:
        click.confirm("apply these changes?", abort=True)
    try:
        carry_out(aws, changes, opts["agent_artifact"])
    except InfraAwsError as exc:
        raise Failed(f"vkec2 infra apply: {exc}") from None
    click.echo("applied")


@click.command("destroy", cls=Command, short_help="delete what apply made for this cluster")
@click.option("--config", metavar="FILE", help="configuration file (default: $VKEC2_CONFIG)")
@click.option("--yes", is_flag=True, help="do not ask before deleting")
def destroy(config: str | None, yes: bool) -> None:
    """Delete every resource tagged vkec2.io/managed-by=infra and with this cluster; nothing else."""
    aws = InfraAws(_settings(config, "destroy"))
    try:
        changes = deletions(aws.actual([]))
    except InfraAwsError as exc:
        raise Failed(f"vkec2 infra destroy: {exc}") from None
    click.echo(render(changes))
    if not changes:
        return
    if not yes:
        click.confirm("delete these resources?", abort=True)
    try:
        carry_out(aws, changes)
    except InfraAwsError as exc:
        raise Failed(f"vkec2 infra destroy: {exc}") from None
    click.echo("destroyed")
