"""The processes of a chaos run: shared services, and one fleet per scenario, all stoppable by PID.

:class:`Services` lives for the whole run: moto's EC2 server, the AWS-like double in front of it
(lag, throttling and capacity errors: :data:`CHAOS_AWS`), the agent simulator (which asks moto
directly) and the :class:`~tests.chaos.faults.Partition` forwarder the workers reach it through.
:class:`Fleet` is one scenario's: its own ``redis-server`` (or a Sentinel group: two servers and
three sentinels), a :class:`~tests.support.fleet.FleetHarness` with two Celery workers and beat,
and the standalone producer (``vkec2 producer --manifests DIR``) whose directory the scenario
writes pods into. Every process is a :class:`~vkec2.cli.procs.ManagedProcess` stopped by its PID.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from producer.standalone import parse_manifest
from tests.chaos.faults import AgentFaults, FaultLedger, Partition
from tests.support.awslike import AWS_LIKE, CapacityRule
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness
from tests.support.services import (
    ManagedProcess,
    free_port,
    start_agent_sim,
    start_moto,
    start_redis,
    wait_until,
)

NODE = "vk-chaos-0"
SENTINEL_MASTER = "vkec2"

#: AWS's unkind side, all of it: the realistic preset, 5 % of requests throttled at random, and
#: 20 % of m5.large launches refused for capacity (the pods fall back to m5.xlarge).
CHAOS_AWS = replace(
    AWS_LIKE,
    throttle_fraction=0.05,
    capacity=(CapacityRule("InsufficientInstanceCapacity", instance_type="m5.large", fraction=0.2),),
)

#: Fleet settings: short periods so a scenario sees the sweep, GC and beat at work, and the broker's
#: visibility timeout as deployed (a lost message waits for the fleet's resume, not kombu's restore).
OVERRIDES: dict[str, Any] = {
    "celery": {"visibility_timeout_seconds": 600},
    "ec2": {"instance_types": ["m5.xlarge"], "unavailable_ttl_seconds": 5},
    "health": {"interval_seconds": 2, "unhealthy_threshold": 3, "unknown_threshold": 4},
    "gc": {"interval_seconds": 15, "grace_seconds": 0},
    "beat": {"lock_timeout_seconds": 4, "max_loop_interval_seconds": 1},
}

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: sim, command: [sleep, "3600"]}}]
"""


def sentinel_url(ports: list[int]) -> str:
    """The fleet's ``redis_url`` for a Sentinel group, as kombu reads them (``;``-joined, the
    database on the first); the master's name is the ``redis_sentinel_master`` setting."""
    urls = [f"sentinel://127.0.0.1:{p}" for p in ports]
    return ";".join([urls[0] + "/0", *urls[1:]])


class Services:
    """moto, the EC2 double, the agent simulator and the partition forwarder, for the whole run."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []
        self.proxy: Ec2Proxy | None = None
        self.partition: Partition | None = None
        self.agents: AgentFaults | None = None

    def start(self, seed: int) -> Services:
        moto, self.moto_url = start_moto(log_dir=self.log_dir)
        self.procs.append(moto)
        self.proxy = Ec2Proxy(self.moto_url, seed=seed).start()
        self.proxy.configure(CHAOS_AWS)
        sim, self.sim_endpoint = start_agent_sim(self.moto_url, log_dir=self.log_dir)
        self.procs.append(sim)
        self.partition = Partition(self.sim_endpoint).start()
        self.agents = AgentFaults(self.sim_endpoint)
        return self

    def stop(self) -> None:
        if self.agents is not None:
            self.agents.close()
        if self.partition is not None:
            self.partition.stop()
        if self.proxy is not None:
            self.proxy.stop()
        for proc in reversed(self.procs):
            proc.stop()


@dataclass
class RedisGroup:
    """The scenario's Redis: one server, or a master, a replica and three sentinels."""

    log_dir: str
    sentinel: bool = False
    servers: list[tuple[ManagedProcess, int]] = field(default_factory=list)
    sentinels: list[ManagedProcess] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    def _server(self, port: int | None = None) -> tuple[ManagedProcess, int]:
        """A ``redis-server`` that, made a replica, loads its first sync without an RDB file (no
        file lands in the current directory)."""
        proc, url = start_redis(port, log_dir=self.log_dir)
        port = int(url.rsplit(":", 1)[1])
        client = redis.Redis(port=port)
        try:
            client.config_set("repl-diskless-load", "on-empty-db")
        finally:
            client.close()
        return proc, port

    def start(self) -> str:
        self.servers.append(self._server())
        if not self.sentinel:
            return f"redis://127.0.0.1:{self.servers[0][1]}/0"
        master = self.servers[0][1]
        self.servers.append(self._server())
        client = redis.Redis(port=self.servers[1][1])
        try:
            client.replicaof("127.0.0.1", master)
        finally:
            client.close()
        for _ in range(3):
            self._start_sentinel(master)
        wait_until(self._settled, 30, "the sentinels to know the replica and each other", interval=0.2)
        return sentinel_url(self.sentinel_ports)

    def _settled(self) -> bool:
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
            try:
                state: Any = sentinel.sentinel_master(SENTINEL_MASTER)
                replicas: Any = sentinel.sentinel_slaves(SENTINEL_MASTER)
            finally:
                sentinel.close()
            if int(state["num-other-sentinels"]) != 2 or not replicas:
                return False
        return True

    def _start_sentinel(self, master: int) -> None:
        port = free_port()
        conf = Path(self.log_dir) / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
        )
        proc = ManagedProcess("sentinel", ["redis-server", str(conf), "--sentinel"], log_dir=self.log_dir)
        self.sentinels.append(proc.start())
        self.sentinel_ports.append(port)
        wait_until(lambda: _pings(port), 15, f"sentinel on port {port}")

    def master_port(self) -> int:
        """The port the sentinels name as master now (the first server without sentinels)."""
        if not self.sentinel:
            return self.servers[0][1]
        addr = redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(SENTINEL_MASTER)
        assert isinstance(addr, tuple), f"the sentinels know no master {SENTINEL_MASTER}"
        return int(addr[1])

    def lose_data(self) -> None:
        """Restart the (only) server on its port without its data: a Redis that came back empty."""
        proc, port = self.servers[0]
        proc.kill()
        proc.stop()
        self.servers[0] = self._server(port)

    def kill_master(self) -> int:
        """SIGKILL the current master; returns its port."""
        port = self.master_port()
        for proc, p in self.servers:
            if p == port:
                proc.kill()
        return port

    def restart(self, port: int) -> None:
        """Start a server again on ``port`` (it rejoins as a replica when the sentinels say so)."""
        for i, (proc, p) in enumerate(self.servers):
            if p == port and not proc.alive():
                proc.stop()
                self.servers[i] = self._server(port)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.stop()
        for proc, _ in self.servers:
            proc.stop()


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


class Fleet:
    """One scenario's fleet: Redis, two workers, beat, the standalone producer and its manifests."""

    def __init__(self, services: Services, root: Path, name: str, *, sentinel: bool, seed: int) -> None:
        self.services = services
        self.root = root / name
        self.root.mkdir()
        self.manifests = self.root / "manifests"
        self.manifests.mkdir()
        self.name = name
        self.redis = RedisGroup(services.log_dir, sentinel=sentinel)
        self.ledger = FaultLedger()
        self.random = random.Random(seed)
        self.harness: FleetHarness | None = None
        self.producer: ManagedProcess | None = None
        self.beat: ManagedProcess | None = None
        self.uids: dict[str, str] = {}  # manifest file -> pod UID

    @property
    def fleet(self) -> FleetHarness:
        assert self.harness is not None, "the fleet did not start"
        return self.harness

    def start(self) -> Fleet:
        url = self.redis.start()
        assert self.services.proxy is not None and self.services.partition is not None
        overrides = (
            {**OVERRIDES, "redis_sentinel_master": SENTINEL_MASTER} if self.redis.sentinel else OVERRIDES
        )
        self.harness = FleetHarness(
            self.root,
            url,
            self.services.proxy.url,
            self.services.partition.address,
            overrides,
            observe_url=self.services.moto_url,
        )
        for _ in range(2):
            self.fleet.start_worker(concurrency=3)
        self.start_beat()
        self.start_producer()
        return self

    def start_beat(self) -> None:
        self.beat = self.fleet.start_beat()

    def start_producer(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "vkec2.cli",
            "producer",
            "--config",
            str(self.fleet.config_path),
            "--node-name",
            NODE,
            "--no-kubelet",
            "--manifests",
            str(self.manifests),
        ]
        self.producer = ManagedProcess("producer", argv, env=self.fleet.env(), log_dir=self.services.log_dir)
        self.producer.start()

    def workers(self) -> list[ManagedProcess]:
        return [w for w in self.fleet.workers if w is not self.beat and w.alive()]

    # -- pods -------------------------------------------------------------------------------

    def add_pods(self, count: int) -> list[str]:
        """Write ``count`` pod manifests; returns their UIDs (as the producer derives them)."""
        uids = []
        for i in range(len(self.uids), len(self.uids) + count):
            fname = f"pod-{i:03d}.yaml"
            text = POD.format(name=f"{self.name}-{i}")
            (pod,) = parse_manifest(fname, text, NODE)
            self.uids[fname] = str(pod["metadata"]["uid"])
            (self.manifests / fname).write_text(text)
            uids.append(self.uids[fname])
        return uids

    def remove_pods(self) -> dict[str, float]:
        """Remove every manifest (deleting its pod); returns when each UID was deleted."""
        deleted = {}
        for fname, uid in self.uids.items():
            (self.manifests / fname).unlink(missing_ok=True)
            deleted[uid] = time.time()
        return deleted

    def stop(self) -> None:
        if self.producer is not None:
            self.producer.stop()
        if self.harness is not None:
            with contextlib.suppress(Exception):
                self.harness.stop()
        self.redis.stop()
