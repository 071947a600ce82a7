"""``vkec2 status|pods|instances|gc|replay``: see and steer a running fleet from a terminal or a script.

Each command loads the fleet configuration (``--config FILE`` or ``VKEC2_CONFIG`` plus ``VKEC2_*``
overrides), reads Redis (and EC2 for ``instances``), and prints a table for people or JSON with
``-o json``. ``gc --dry-run`` shows what orphan GC sees (changing nothing); ``gc`` runs one pass
on the workers. ``replay`` republishes a task by name with ``{"uid": ...}`` exactly as
``celery -A tasks call`` would. When Redis or the EC2 endpoint cannot be reached the command says
which address failed and exits 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from rich.console import Console
from rich.table import Table

from vkec2.config import Settings, load_settings
from vkec2.contract import ORPHAN_GC, POD_TASKS, TAG_POD_UID, TAG_POOL, TAG_POOL_STATE, pod_task_kwargs
from vkec2.domain.models import Phase, PodRecord
from vkec2.ec2.gateway import Ec2Gateway, tag_map
from vkec2.errors import ConfigError, Ec2Error
from vkec2.fleet.gc import is_orphan
from vkec2.fleet.warmpool import launch_time
from vkec2.store.redis_store import Store

REPLAYABLE = POD_TASKS


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
    except redis.RedisError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc


def _redis_address(store: Store) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _health(rec: PodRecord) -> str:
    return str(rec.health.get("state") or ("-" if rec.phase is not Phase.RUNNING else "Healthy"))


def cmd_status(settings: Settings, store: Store, args: argparse.Namespace) -> Any:
    records = _records(store)
    phases = Counter(r.phase.value for r in records)
    try:
        calls = store.ec2_calls()
        nodes = sorted(store.nodes())
    except redis.RedisError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    return {
        "cluster": settings.cluster_name,
        "nodes": nodes,
        "pods": len(records),
        "pods_by_phase": dict(sorted(phases.items())),
        "ec2_calls": dict(sorted(calls.items())),
    }


def cmd_pods(settings: Settings, store: Store, args: argparse.Namespace) -> Any:
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
        if args.node is None or r.node == args.node
    ]


def cmd_instances(settings: Settings, store: Store, args: argparse.Namespace) -> Any:
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


def cmd_replay(settings: Settings, store: Store, args: argparse.Namespace) -> Any:
    if args.task not in REPLAYABLE:
        raise CommandError(f"unknown task {args.task!r}; replayable tasks: {', '.join(REPLAYABLE)}")
    try:
        if store.get(args.uid) is None:
            raise CommandError(f"no pod with uid {args.uid} in cluster {settings.cluster_name}")
    except redis.RedisError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    return _publish(settings, args.task, pod_task_kwargs(args.uid))


def cmd_gc(settings: Settings, store: Store, args: argparse.Namespace) -> Any:
    """--dry-run: what orphan GC sees now, touching nothing; otherwise run one pass on the workers."""
    if not args.dry_run:
        return _publish(settings, ORPHAN_GC, {})
    try:
        instances = Ec2Gateway(settings).cluster_instances()
    except Ec2Error as exc:
        where = settings.aws.endpoint_url or f"EC2 in {settings.region}"
        raise CommandError(f"cannot list instances from {where}: {exc.message}") from exc
    try:
        known = store.uids()
        raw = cast(dict[str, str], store.redis.hgetall(store.keys.gc_sightings()))
        last_pass = int(store.redis.get(store.keys.gc_pass()) or 0)
    except redis.RedisError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    now = time.time()
    rows = []
    for inst in instances:
        if not is_orphan(inst, known):
            continue
        age = now - launch_time(inst)
        seen = json.loads(raw[inst["InstanceId"]]) if inst["InstanceId"] in raw else None
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
        raise CommandError(f"cannot publish to the broker at {settings.redis_url}: {exc}") from exc
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
            console.print(f"[bold]{key}[/bold]: {value}")


COMMANDS: dict[str, Callable[[Settings, Store, argparse.Namespace], Any]] = {
    "status": cmd_status,
    "pods": cmd_pods,
    "instances": cmd_instances,
    "replay": cmd_replay,
    "gc": cmd_gc,
}


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"vkec2 {name}")
    parser.add_argument("--config", help="configuration file (default: $VKEC2_CONFIG)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    if name == "pods":
        parser.add_argument("--node", help="only pods of this virtual node")
    if name == "gc":
        parser.add_argument("--dry-run", action="store_true", help="report what GC would do; change nothing")
    if name == "replay":
        parser.add_argument("task", metavar="TASK", help=f"one of {', '.join(REPLAYABLE)}")
        parser.add_argument("--uid", required=True, help="the pod UID")
    return parser


def main(name: str, argv: Sequence[str]) -> int:
    try:
        args = _parser(name).parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"vkec2 {name}: {exc.message}", file=sys.stderr)
        return 1
    store = Store.from_url(settings.redis_url, settings.cluster_name)
    try:
        _print(name, COMMANDS[name](settings, store, args), args.output)
    except CommandError as exc:
        print(f"vkec2 {name}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.redis.close()
    return 0
