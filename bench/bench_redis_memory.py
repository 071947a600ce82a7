"""Benchmark: Redis bytes per pod at steady state, broker and status outbox included, per key family.

Starts a private ``redis-server`` (one database for the cluster), moto's server behind the EC2
double and the agent simulator on free loopback ports (:class:`bench.fleetrun.Servers`), one Celery
worker (4 threads) and beat (the health sweep and the other periodic passes write what they write at
steady state); the fleet runs with its settings as deployed (launches batched, its own EC2 request
buckets on). It records Redis's ``used_memory`` once the worker and beat are up (the baseline:
kombu's bindings, beat's schedule), creates N pods (``--quick``: 100, else 1,000), waits until all
are Running, no step is due any more and their pod tags are written, and consumes the node's status
outbox as the producer does (:class:`producer.outbox.OutboxConsumer` with a sink that accepts every
event: it reads with the consumer group, acknowledges, and trims what every reader has settled). It
then prints ``(used_memory - baseline) / N`` and a table of ``MEMORY USAGE`` summed over every key,
grouped by key family (the key with its pod UIDs, instance IDs and other IDs replaced by
placeholders; the families of :mod:`vkec2.store.keys` and kombu's).
Goal (issue 16): at most 2 KB per pod. Run: ``PYTHONPATH=. python bench/bench_redis_memory.py``.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections import defaultdict
from typing import Any, cast

import redis

from bench.common import Figure, Result, write_result
from bench.fleetrun import Servers, fleet_overrides, start_workers
from producer.outbox import OutboxConsumer
from tests.support.awslike import AwsLike
from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.domain.models import Phase, StatusEvent
from vkec2.store.redis_store import Store

GOAL_BYTES = 2048

_IDS = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "{uuid}"),
    (re.compile(r"\bi-[0-9a-f]{8,17}\b"), "{instance}"),
    (re.compile(r"[0-9a-f]{32}"), "{hex}"),
]


def family(key: str, prefix: str) -> str:
    """The key's family: its name without the cluster prefix, IDs replaced by placeholders."""
    name = key[len(prefix) :] if key.startswith(prefix) else key
    for pattern, placeholder in _IDS:
        name = pattern.sub(placeholder, name)
    return name


def breakdown(store: Store) -> dict[str, tuple[int, int]]:
    """Family -> (keys, bytes by MEMORY USAGE) over every key of every database of the server."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    dbs = [int(name[2:]) for name in store.redis.info("keyspace") if str(name).startswith("db")]
    home = int(store.redis.connection_pool.connection_kwargs.get("db", 0))
    for db in dbs:
        kwargs = store.redis.connection_pool.connection_kwargs
        client = redis.Redis(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379), db=db)
        for key in client.scan_iter(count=1000):
            used = client.memory_usage(key, samples=0) or 0
            name = family(key.decode() if isinstance(key, bytes) else str(key), store.keys.prefix)
            row = out[name if db == home else f"(db {db}) {name}"]
            row[0] += 1
            row[1] += int(used)
        client.close()
    return {k: (v[0], v[1]) for k, v in out.items()}


def used_memory(store: Store) -> int:
    """Redis's ``used_memory`` without its clients' buffers (connections come and go with the load)."""
    info = store.redis.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


def memory_info(store: Store) -> dict[str, int]:
    """INFO memory's byte counters."""
    info = store.redis.info("memory")
    return {k: int(v) for k, v in info.items() if isinstance(v, int) and not k.endswith("_human")}


def record_fields(store: Store, uid: str) -> str:
    """One pod record's fields by size (what its hash holds)."""
    raw = cast(dict[str, str], store.redis.hgetall(store.keys.pod(uid)))
    sizes = sorted(((len(k) + len(v), k) for k, v in raw.items()), reverse=True)
    found: Any = store.redis.object("encoding", store.keys.pod(uid))
    encoding = found.decode() if isinstance(found, bytes) else str(found)
    head = f"one pod record: {len(raw)} fields, {sum(n for n, _ in sizes)} B of names and values, {encoding}"
    return head + "\n" + ", ".join(f"{k} {n}" for n, k in sizes[:12])


class AcceptAll:
    """A status sink that accepts every event (the producer's API writes are not what is measured)."""

    def __init__(self) -> None:
        self.events = 0

    def __call__(self, entry_id: str, event: StatusEvent) -> None:
        self.events += 1

    def transient(self, exc: Exception) -> bool:
        return False

    def dead_lettered(self, entry_id: str, event: StatusEvent, reason: str) -> None:
        pass


def settle(fleet: FleetHarness, uids: list[str], timeout: float) -> None:
    """Until every pod is Running, none has a step due (its create chain ended) and every pod's
    tags are on its instance (a batch's are written after the launch)."""
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=timeout)
    due = fleet.store.keys.due()
    wait_until(lambda: fleet.store.redis.zcard(due) == 0, 60, "the create chains to end", interval=0.2)
    untagged = fleet.store.keys.launch_untagged()
    wait_until(lambda: fleet.store.redis.hlen(untagged) == 0, 60, "the pod tags to be written", interval=0.2)


def table(rows: dict[str, tuple[int, int]], pods: int) -> str:
    lines = [f"{'key family':<52} {'keys':>7} {'bytes':>10} {'B/pod':>8}"]
    for name, (keys, used) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{name[:52]:<52} {keys:>7} {used:>10} {used / pods:>8.0f}")
    total = sum(u for _, u in rows.values())
    lines.append(
        f"{'total (MEMORY USAGE)':<52} {sum(k for k, _ in rows.values()):>7} {total:>10} {total / pods:>8.0f}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 pods instead of 1,000")
    parser.add_argument("--pods", type=int, default=0, help="pods to create (overrides --quick)")
    args = parser.parse_args()
    pods = args.pods or (100 if args.quick else 1000)
    started = time.monotonic()
    servers = Servers()
    stop = threading.Event()
    try:
        servers.start()
        # As deployed: launches batched (the EC2 double launches MaxCount, as AWS; moto alone
        # launches MinCount), the fleet's own request buckets on.
        fleet = servers.fleet(fleet_overrides(), AwsLike())
        start_workers(fleet, 1, threads=4)
        fleet.start_beat()
        consumer = OutboxConsumer(fleet.store, NODE, AcceptAll())
        consumer.ensure_group()
        time.sleep(2)  # beat's first ticks and the worker's bindings are part of the baseline
        fleet.store.redis.slowlog_reset()
        baseline = used_memory(fleet.store)
        info_before = memory_info(fleet.store)
        before = breakdown(fleet.store)
        uids = [fleet.submit(example_pod(f"mem-{i}")) for i in range(pods)]
        settle(fleet, uids, timeout=120 + pods * 0.5)
        threading.Thread(target=consumer.run, args=(stop,), daemon=True).start()
        wait_until(
            lambda: (
                fleet.store.outbox_pending(NODE, "producer") is None
                and fleet.store.outbox_oldest_unread(NODE, "producer") is None
            ),
            60,
            "the outbox to be consumed",
            interval=0.2,
        )
        time.sleep(1.5)  # the consumer's trim after its last batch
        print(f"outbox entries left: {fleet.store.redis.xlen(fleet.store.keys.outbox(NODE))}")
        print(f"slow log entries dropped before measuring: {fleet.store.redis.slowlog_len()}")
        fleet.store.redis.slowlog_reset()  # up to 128 slow commands with their arguments: not per pod
        grown = used_memory(fleet.store) - baseline
        info_after = memory_info(fleet.store)
        moved = {k: info_after[k] - info_before.get(k, 0) for k in info_after}
        shown: tuple[str, ...] = (
            "used_memory",
            "used_memory_dataset",
            "used_memory_overhead",
            "mem_clients_normal",
            "used_memory_scripts",
            "used_memory_vm_eval",
            "mem_not_counted_for_evict",
        )
        shown += tuple(k for k, v in moved.items() if abs(v) > 10_000 and k not in shown and "peak" not in k)
        print("INFO memory growth: " + ", ".join(f"{k} {moved[k]:+d}" for k in shown if k in moved))
        after = breakdown(fleet.store)
        delta = {
            k: (v[0] - before.get(k, (0, 0))[0], v[1] - before.get(k, (0, 0))[1]) for k, v in after.items()
        }
        delta = {k: v for k, v in delta.items() if v != (0, 0)}
        print(record_fields(fleet.store, uids[0]))
        print(f"used_memory: {baseline} -> {baseline + grown} bytes for {pods} pods")
        print(table(delta, pods))
        per_pod = grown / pods
        keyed = sum(u for _, u in delta.values()) / pods
        figures = [
            Figure(
                f"Redis bytes per pod (used_memory growth, {pods} Running pods)",
                round(per_pod),
                "B",
                goal=f"<= {GOAL_BYTES} B",
                met=per_pod <= GOAL_BYTES,
                note="broker, outbox (consumed) and beat included; baseline taken with worker and beat up",
            ),
            Figure(f"Redis bytes per pod (MEMORY USAGE of the keys, {pods} pods)", round(keyed), "B"),
        ]
        for name, (_keys, used) in sorted(delta.items(), key=lambda kv: -kv[1][1])[:5]:
            figures.append(Figure(f"bytes per pod in {name}", round(used / pods), "B"))
        write_result(
            Result(
                name="redis_memory",
                title="Redis bytes per pod",
                command="PYTHONPATH=. python bench/bench_redis_memory.py"
                + (" --quick" if args.quick else ""),
                description=__doc__.split("\n\n")[0] if __doc__ else "",
                figures=figures,
                quick=args.quick,
                seconds=time.monotonic() - started,
            )
        )
    finally:
        stop.set()
        servers.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
