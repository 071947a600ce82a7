"""Benchmark: what ``redis_wait_replicas`` costs a fenced pod write, on a master with one replica.

Starts its own master and replica (``redis-server --replicaof``) on free loopback ports, then
times fenced writes of one pod record (the Lua compare-and-set every lifecycle step makes) with
``redis_wait_replicas`` 0 (no WAIT) and 1 (WAIT for the replica, in the same pipeline), and prints
the median and 99th percentile per write (``bench/results/redis_wait.json``). It prints numbers,
not pass/fail. Run: ``PYTHONPATH=. python bench/bench_redis_wait.py [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid

from bench.common import Figure, Result, write_result
from vkec2.cli.procs import free_port, start_redis, wait_until
from vkec2.store.redis_store import Store


def pod(uid: str) -> dict[str, object]:
    return {
        "metadata": {"name": "bench", "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "main", "image": "sim"}]},
    }


def measure(url: str, replicas: int, writes: int) -> list[float]:
    store = Store.from_url(url, f"bench-{uuid.uuid4().hex[:8]}", wait_replicas=replicas)
    uid = str(uuid.uuid4())
    store.put_desired(pod(uid), "bench-node")
    timings = []
    with store.locked(uid, 60_000) as lock:
        for n in range(writes):
            start = time.perf_counter()
            lock.write({"message": f"write {n}"})
            timings.append(time.perf_counter() - start)
    store.close()
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, help="fenced writes per setting (2,000; quick: 300)")
    parser.add_argument("--quick", action="store_true", help="fewer writes (make bench-quick)")
    args = parser.parse_args()
    writes = args.writes or (300 if args.quick else 2000)
    started = time.monotonic()
    figures: list[Figure] = []
    master, url = start_redis()
    replica_port = free_port()
    scratch = tempfile.mkdtemp(prefix="bench-redis-wait-")  # the replica's RDB of its first sync
    replica_args = ["--replicaof", "127.0.0.1", url.rsplit(":", 1)[1], "--dir", scratch]
    replica, replica_url = start_redis(replica_port, args=replica_args)
    try:
        probe = Store.from_url(replica_url, "probe")
        wait_until(
            lambda: probe.redis.info("replication").get("master_link_status") == "up", 30, "the replica"
        )
        probe.close()
        print(f"{'redis_wait_replicas':>20} {'median ms':>10} {'p99 ms':>8}")
        for replicas in (0, 1):
            timings = sorted(measure(f"{url}/0", replicas, writes))
            median = statistics.median(timings) * 1000
            p99 = timings[int(len(timings) * 0.99) - 1] * 1000
            print(f"{replicas:>20} {median:>10.3f} {p99:>8.3f}")
            figures += [
                Figure(f"fenced write, redis_wait_replicas {replicas}: median", median, "ms"),
                Figure(f"fenced write, redis_wait_replicas {replicas}: p99", p99, "ms"),
            ]
        write_result(
            Result(
                name="redis_wait",
                title="What redis_wait_replicas costs a fenced write",
                command="PYTHONPATH=. python bench/bench_redis_wait.py" + (" --quick" if args.quick else ""),
                description=f"A master and one replica on free loopback ports; {writes} fenced writes of one "
                "pod record (the Lua compare-and-set of every lifecycle step) with redis_wait_replicas 0 "
                "(no WAIT) and 1 (WAIT for the replica in the same pipeline).",
                figures=figures,
                quick=args.quick,
                seconds=round(time.monotonic() - started, 1),
            )
        )
    finally:
        replica.stop()
        master.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
