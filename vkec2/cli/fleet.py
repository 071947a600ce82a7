"""``vkec2 status|pods|instances|gc|replay``: see and steer a running fleet from a terminal or a script.

``status`` also shows whether the health sweep's remediation breaker holds back replacements
(``remediation``) and whether the fleet misses its beat (``beat``).

Each command loads the fleet configuration (``--config FILE`` or ``VKEC2_CONFIG`` plus ``VKEC2_*``
overrides), reads Redis (and EC2 for ``instances``), and prints a table for people or JSON with
``-o json``. ``status`` also counts the status events the producers gave up on (the nodes'
dead-letter streams) and names the newest few with their pod and reason. ``gc --dry-run`` shows
what orphan GC sees (changing nothing); ``gc`` runs one pass on the workers. ``replay``
republishes a task by name with ``{"uid": ...}`` exactly as ``celery -A tasks call`` would. When
Redis or the EC2 endpoint cannot be reached the command says which address failed and exits 1;
usage errors exit 2. Each command is a click command that the ``vkec2`` group
(``vkec2/cli/main.py``) loads by name.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vkec2.cli.common import Command, Failed
from vkec2.config import Settings, load_settings
from vkec2.config.redaction import redact
from vkec2.contract import ORPHAN_GC, POD_TASKS, TAG_POD_UID, TAG_POOL, TAG_POOL_STATE, pod_task_kwargs
from vkec2.domain.health import health_label
from vkec2.domain.instances import tag_map
from vkec2.domain.models import Phase, PodRecord
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import ConfigError, Ec2Error
from vkec2.fleet.breaker import fleet_signals
from vkec2.fleet.gc import is_orphan
from vkec2.fleet.hosts import host_counts
from vkec2.fleet.warmpool import launch_time
from vkec2.store.redis_store import Store, StoreError


class CommandError(Exception):
    """A failure to report as one clear line and exit status 1."""


def _age(since: float) -> str:
    if not since:
        return "-"
    seconds = int(max(0.0, time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _records(store: Store) -> list[PodRecord]:
    try:
        return store.records()
    except StoreError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc


def _redis_address(store: Store) -> str:
    return store.address()


def _health(rec: PodRecord) -> str:
    """The health sweep's view of the pod (vkec2.domain.health.health_label)."""
    return health_label(rec.health, rec.phase is Phase.RUNNING)


#: How many dead-lettered status events ``vkec2 status`` names, and how much of each reason.
DEAD_SHOWN = 3
REASON_CHARS = 100


def cmd_status(settings: Settings, store: Store) -> Any:
    records = _records(store)
    phases = Counter(r.phase.value for r in records)
    try:
        calls = store.ec2_calls()
        nodes = sorted(store.nodes())
        dead = {node: store.outbox_dead_letters(node, DEAD_SHOWN) for node in nodes}
        breaker, beat = fleet_signals(store, settings.beat_liveness_seconds())
    except StoreError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    newest = sorted(
        ((entry_id, node, fields) for node, (_, entries) in dead.items() for entry_id, fields in entries),
        key=lambda item: tuple(int(part) for part in item[0].split("-")),
        reverse=True,
    )[:DEAD_SHOWN]
    return {
        "cluster": settings.cluster_name,
        "nodes": nodes,
        "pods": len(records),
        "pods_by_phase": dict(sorted(phases.items())),
        "ec2_calls": dict(sorted(calls.items())),
        "status_dead_letters": sum(count for count, _ in dead.values()),
        "status_dead_letters_newest": [
            f"{node} {fields.get('namespace', '?')}/{fields.get('name', '?')}: "
            f"{fields.get('error', '')[:REASON_CHARS]}"
            for _, node, fields in newest
        ],
        "remediation": {
            "paused": breaker.open,
            "reason": breaker.reason,
            "share": round(breaker.share, 3),
            "since": breaker.since,
            "worker": breaker.worker,
            "message": breaker.message,
        },
        "beat": {"missing": beat.missing, "reason": beat.reason, "message": beat.message},
        "hosts": host_counts(settings, store),  # Dedicated hosts by pool and state (`vkec2 hosts`)
    }


def cmd_pods(settings: Settings, store: Store, node: str | None) -> Any:
    return [
        {
            "namespace": r.namespace,
            "name": r.name,
            "uid": r.uid,
            "node": r.node,
            "phase": r.phase.value,
            "reason": r.reason,
            "instance": r.instance_id,
            "health": _health(r),
            "age": _age(r.created_at),
        }
        for r in _records(store)
        if node is None or r.node == node
    ]


def cmd_instances(settings: Settings, store: Store) -> Any:
    gateway = Ec2Gateway(settings)
    try:
        instances = gateway.cluster_instances(("pending", "running", "stopping", "stopped", "shutting-down"))
    except Ec2Error as exc:
        where = settings.aws.endpoint_url or f"EC2 in {settings.region}"
        raise CommandError(f"cannot list instances from {where}: {exc.message}") from exc
    out = []
    for inst in instances:
        tags = tag_map(inst)
        out.append(
            {
                "instance": inst["InstanceId"],
                "type": inst.get("InstanceType", ""),
                "state": inst.get("State", {}).get("Name", ""),
                "private_ip": inst.get("PrivateIpAddress", ""),
                "pod_uid": tags.get(TAG_POD_UID, ""),
                "pool": tags.get(TAG_POOL, ""),
                "pool_state": tags.get(TAG_POOL_STATE, ""),
                "launched": inst.get("LaunchTime", ""),
            }
        )
    return out


def cmd_replay(settings: Settings, store: Store, task: str, uid: str) -> Any:
    if task not in POD_TASKS:
        raise CommandError(f"unknown task {task!r}; replayable tasks: {', '.join(POD_TASKS)}")
    try:
        if store.get(uid) is None:
            raise CommandError(f"no pod with uid {uid} in cluster {settings.cluster_name}")
    except StoreError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    return _publish(settings, task, pod_task_kwargs(uid))


def cmd_gc(settings: Settings, store: Store, dry_run: bool) -> Any:
    """--dry-run: what orphan GC sees now, touching nothing; otherwise run one pass on the workers."""
    if not dry_run:
        return _publish(settings, ORPHAN_GC, {})
    try:
        instances = Ec2Gateway(settings).cluster_instances()
    except Ec2Error as exc:
        where = settings.aws.endpoint_url or f"EC2 in {settings.region}"
        raise CommandError(f"cannot list instances from {where}: {exc.message}") from exc
    try:
        known = store.uids()
        sightings = store.gc_sightings()
        last_pass = store.gc_last_pass()
    except StoreError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    now = time.time()
    rows = []
    for inst in instances:
        if not is_orphan(inst, known):
            continue
        age = now - launch_time(inst)
        seen = sightings.get(inst["InstanceId"])
        in_grace = age < settings.gc.grace_seconds
        rows.append(
            {
                "instance": inst["InstanceId"],
                "pod_uid": tag_map(inst).get(TAG_POD_UID, ""),
                "age": _age(now - age),
                "in_grace": in_grace,
                "seen_last_pass": bool(seen and int(seen["last"]) == last_pass),
                "next_pass": "keep (grace)"
                if in_grace
                else ("terminate" if seen and int(seen["last"]) == last_pass else "mark"),
            }
        )
    return rows


def _publish(settings: Settings, task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    from vkec2.broker.app import make_app

    app = make_app(settings)
    try:
        result = app.send_task(task, kwargs=kwargs)
    except Exception as exc:  # kombu raises several connection error types
        raise CommandError(
            f"cannot publish to the broker at {redact(settings.redis_url)}: {redact(str(exc))}"
        ) from exc
    finally:
        app.close()
    return {"task": task, **kwargs, "task_id": result.id}


def _table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in rows[0] if rows else ["(none)"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table


def _print(name: str, result: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(result, indent=2, default=str))
        return
    # Wide enough for IDs and UIDs when writing to a pipe or file; a terminal keeps its width.
    console = Console() if sys.stdout.isatty() else Console(width=220)
    if isinstance(result, list):
        console.print(_table(result, name))
    else:
        for key, value in result.items():
            if isinstance(value, list):
                value = "; ".join(map(str, value)) or "-"
            console.print(f"[bold]{key}[/bold]: {escape(str(value))}")


def _run(name: str, config: str | None, output: str, command: Callable[[Settings, Store], Any]) -> None:
    """Load the configuration, run ``command`` against the cluster's store, print its result."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise Failed(f"vkec2 {name}: {exc.message}") from exc
    store = Store.from_settings(settings)
    try:
        _print(name, command(settings, store), output)
    except CommandError as exc:
        raise Failed(f"vkec2 {name}: {exc}") from exc
    finally:
        store.close()


def _fleet_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every fleet command takes: ``--config FILE`` and ``-o table|json``."""
    output = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
    config = click.option("--config", metavar="FILE", help="configuration file (default: $VKEC2_CONFIG)")
    return config(output(command))


@click.command("status", cls=Command)
@_fleet_options
def status(config: str | None, output: str) -> None:
    """fleet summary: nodes, pods by phase, EC2 calls, dead-lettered status events"""
    _run("status", config, output, cmd_status)


@click.command("pods", cls=Command)
@_fleet_options
@click.option("--node", help="only pods of this virtual node")
def pods(config: str | None, output: str, node: str | None) -> None:
    """pods with phase, instance, health and age"""
    _run("pods", config, output, lambda settings, store: cmd_pods(settings, store, node))


@click.command("instances", cls=Command)
@_fleet_options
def instances(config: str | None, output: str) -> None:
    """the cluster's EC2 instances with tags and state"""
    _run("instances", config, output, cmd_instances)


@click.command("gc", cls=Command)
@_fleet_options
@click.option("--dry-run", is_flag=True, help="report what GC would do; change nothing")
def gc(config: str | None, output: str, dry_run: bool) -> None:
    """orphan GC: --dry-run reports, otherwise run one pass now"""
    _run("gc", config, output, lambda settings, store: cmd_gc(settings, store, dry_run))


@click.command(
    "replay",
    cls=Command,
    short_help="republish a pod task by name, as 'celery call' would",
    help=f"Republish a pod task by name, as 'celery call' would. TASK is one of {', '.join(POD_TASKS)}.",
)
@_fleet_options
@click.argument("task", metavar="TASK")
@click.option("--uid", required=True, help="the pod UID")
def replay(config: str | None, output: str, task: str, uid: str) -> None:
    _run("replay", config, output, lambda settings, store: cmd_replay(settings, store, task, uid))
