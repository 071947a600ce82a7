"""``vkec2 up``'s proof that the example workloads really run: readiness and what each one printed.

The local fleet's agents run the example pods as real processes (the simulator's ``--runtime
process``), so a pod's ConfigMap and Secret values reach its command and its readiness probe really
runs. :func:`show_workloads` waits until every example pod's Ready condition (copied from its agent
by the health sweep) is True, then prints one row per pod: ready, and the first line of its first
container's log read from its agent with the fleet's own client — the line the nightly report prints
is built from its ConfigMap, and its readiness probe checks the Secret's value arrived.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from vkec2.agent_client.client import AgentClient
from vkec2.config import Settings
from vkec2.contract import POD_READY
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import PodRecord
from vkec2.errors import AgentError
from vkec2.store.redis_store import Store


def _ready(rec: PodRecord) -> bool:
    return any(c.get("type") == POD_READY and c.get("status") == "True" for c in rec.conditions)


def _first_line(client: AgentClient, rec: PodRecord) -> str:
    containers = rec.spec.get("spec", {}).get("containers") or [{}]
    name = str(containers[0].get("name", ""))
    try:
        data = b"".join(client.logs(AgentTarget(rec.endpoint, rec.instance_id), name, limit_bytes=400))
    except AgentError as exc:
        return f"(log unavailable: {exc})"
    return data.decode("utf-8", "replace").splitlines()[0] if data.strip() else "(nothing yet)"


def show_workloads(
    console: Console, store: Store, settings: Settings, names: Iterable[str], timeout: float
) -> bool:
    """Wait up to ``timeout`` s for the pods ``names`` to be Ready, print the table; whether all were."""
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in store.records() if r.name in wanted]
        if (len(records) == len(wanted) and all(map(_ready, records))) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    client = AgentClient(settings.agent)
    table = Table(title="what the example workloads say (their agents run them as processes)")
    for column in ("pod", "ready", "first log line"):
        table.add_column(column)
    try:
        for rec in sorted(records, key=lambda r: (r.namespace, r.name)):
            table.add_row(f"{rec.namespace}/{rec.name}", str(_ready(rec)), _first_line(client, rec))
    finally:
        client.close()
    console.print(table)
    return len(records) == len(wanted) and all(map(_ready, records))
