"""``vkec2 node``: operator commands on virtual nodes; ``vkec2 node drain NAME`` removes one.

The drain (:class:`producer.drain.NodeDrain`) talks to Kubernetes like the producer does (the same
``--kubeconfig`` / ``--context`` / ``--in-cluster`` choices, :mod:`producer.kube`) and to the fleet
through Redis and Celery (the configuration's ``redis_url``): it cordons the Node, deletes its pods
through the workers, waits up to ``--timeout`` for their instances to be terminated, then removes
the pod objects and the Node and forgets the node in Redis. Stop the node's producer first (scale
its StatefulSet down, which drains the node by itself), or it registers the Node again.
"""

from __future__ import annotations

import click

from vkec2.cli.common import Failed, Group
from vkec2.config import load_settings
from vkec2.errors import ConfigError, Vkec2Error


@click.group("node", cls=Group)
def node() -> None:
    """operate on virtual nodes"""


@node.command("drain")
@click.argument("name")
@click.option("--config", metavar="FILE", help="configuration file (default: $VKEC2_CONFIG)")
@click.option(
    "--kubeconfig", metavar="FILE", help="kubeconfig file (default: in-cluster, else ~/.kube/config)"
)
@click.option("--context", "kube_context", help="kubeconfig context to use")
@click.option("--in-cluster", is_flag=True, help="use the pod's service account")
@click.option("--kube-host", metavar="URL", hidden=True, help="plain-HTTP API server URL (tests)")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="seconds to wait for the pods' instances to be terminated",
)
def drain(
    name: str,
    config: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    in_cluster: bool,
    kube_host: str | None,
    timeout: float,
) -> None:
    """cordon a virtual node, delete its pods and instances, then remove it"""
    from producer.drain import NodeDrain
    from producer.fleet import FleetLink
    from producer.kube import Kube, KubeError, KubeTarget, build_api_client
    from vkec2.broker.app import make_app
    from vkec2.store.redis_store import Store, StoreError

    if sum(bool(x) for x in (kubeconfig, in_cluster, kube_host)) > 1:
        raise click.UsageError("choose one of --kubeconfig, --in-cluster and --kube-host")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise Failed(f"vkec2 node drain: {exc.message}") from exc
    target = KubeTarget(in_cluster=in_cluster, kubeconfig=kubeconfig, context=kube_context, host=kube_host)
    store = Store.from_url(settings.redis_url, settings.cluster_name)
    app = make_app(settings)
    kube = Kube(build_api_client(target))
    try:
        report = NodeDrain(kube, FleetLink(store, app, name)).run(timeout)
    except (Vkec2Error, KubeError, StoreError) as exc:
        raise Failed(f"vkec2 node drain {name}: {exc}") from exc
    finally:
        kube.close()
        app.close()
        store.close()
    click.echo(
        f"node {name} drained: {len(report.pods)} pod(s) deleted"
        + ("" if report.node_deleted else " (the Node object was gone already)")
    )
