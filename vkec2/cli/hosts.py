"""``vkec2 hosts``: the fleet's Dedicated hosts, one row per host, for people (a table) or scripts (JSON).

Each row is read from the Redis mirror the hosts pass keeps (``vkec2.maintenance.hosts``, rebuilt
from DescribeHosts every ``beat.hosts_interval_seconds``): the host, its pool and zone, the fleet's
state (``available``, ``occupied``, ``scrubbing``, ``unusable``) and EC2's, the instances on it and
the pods holding its slots, when it was allocated and for how long, when it may be released (the
24-hour minimum of a Mac host) and how long it has been idle. ``-o json`` (or ``--json``) prints the
rows as JSON with epoch times; the table shows times as ages. Like the other fleet commands it loads
the configuration and exits 1 with the address when Redis cannot be reached.
"""

from __future__ import annotations

import time
from typing import Any

import click

from vkec2.cli.common import Command
from vkec2.cli.fleet import CommandError, _age, _fleet_options, _redis_address, _run
from vkec2.config import Settings
from vkec2.domain.times import rfc3339
from vkec2.fleet.hosts import host_rows
from vkec2.store.redis_store import Store, StoreError


def cmd_hosts(settings: Settings, store: Store, as_json: bool) -> Any:
    try:
        rows = host_rows(settings, store, time.time())
    except StoreError as exc:
        raise CommandError(f"cannot reach Redis at {_redis_address(store)}: {exc}") from exc
    if as_json:
        return rows
    return [
        {
            "host": r["host"],
            "pool": r["pool"],
            "zone": r["zone"],
            "state": r["state"],
            "instances": r["instances"],
            "pods": r["pods"],
            "allocated since": f"{rfc3339(r['allocated_at'])} ({_age(r['allocated_at'])})",
            "releasable at": rfc3339(r["releasable_at"]) if r["releasable_in_s"] else "now",
            "idle": f"{r['idle_for_s']}s" if r["idle_for_s"] is not None else "-",
        }
        for r in rows
    ]


@click.command("hosts", cls=Command)
@_fleet_options
@click.option("--json", "as_json", is_flag=True, help="print JSON (the same as -o json)")
def hosts(config: str | None, output: str, as_json: bool) -> None:
    """Dedicated hosts: state, instance, pool, zone, allocated since, releasable at"""
    json_out = as_json or output == "json"
    _run("hosts", config, "json" if json_out else output, lambda s, st: cmd_hosts(s, st, json_out))
