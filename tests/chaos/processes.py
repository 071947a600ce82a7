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
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from producer.standalone import parse_manifest
from tests.chaos.faults import AgentFaults, FaultLedger, Partition
from tests.support.awslike import AWS_LIKE, CapacityRule
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness
from tests.support.sentinel import MASTER, SentinelGroup
from tests.support.services import (
    ManagedProcess,
    start_agent_sim,
    start_moto,
    start_redis,
)

NODE = "vk-chaos-0"

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
    """The scenario's Redis: one ``redis-server`` of its own, or a :class:`SentinelGroup`."""

    tmp: Path
    log_dir: str
    sentinel: bool = False
    server: tuple[ManagedProcess, int] | None = None
    group: SentinelGroup | None = None

    def start(self) -> str:
        """Start it; the fleet's ``redis_url``."""
        if self.sentinel:
            self.group = SentinelGroup(self.tmp, self.log_dir).start()
            return self.group.url
        proc, url = start_redis(log_dir=self.log_dir)
        self.server = (proc, int(url.rsplit(":", 1)[1]))
        return f"{url}/0"

    def lose_data(self) -> None:
        """Restart the (only) server on its port without its data: a Redis that came back empty."""
        assert self.server is not None, "lose_data needs the single server"
        proc, port = self.server
        proc.kill()
        proc.stop()
        self.server = (start_redis(port, log_dir=self.log_dir)[0], port)

    def sentinels(self) -> SentinelGroup:
        assert self.group is not None, "not a Sentinel group"
        return self.group

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop()
        if self.server is not None:
            self.server[0].stop()


class Fleet:
    """One scenario's fleet: Redis, two workers, beat, the standalone producer and its manifests."""

    def __init__(self, services: Services, root: Path, name: str, *, sentinel: bool, seed: int) -> None:
        self.services = services
        self.root = root / name
        self.root.mkdir()
        self.manifests = self.root / "manifests"
        self.manifests.mkdir()
        self.name = name
        self.redis = RedisGroup(self.root, services.log_dir, sentinel=sentinel)
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
        overrides = {**OVERRIDES, "redis_sentinel_master": MASTER} if self.redis.sentinel else OVERRIDES
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
        argv = self.fleet.producer_argv(NODE, "--no-kubelet", "--manifests", str(self.manifests))
        self.producer = ManagedProcess("producer", argv, env=self.fleet.env(), log_dir=self.services.log_dir)
        self.producer.start()

    def workers(self) -> list[ManagedProcess]:
        return [w for w in self.fleet.workers if w is not self.beat and w.alive()]

    def last_words(self, lines: int = 4) -> list[str]:
        """Each fleet process's state and last log lines: what a failed scenario prints, since the
        logs of a CI run are gone when its report is read."""
        procs = [*(self.harness.workers if self.harness else []), self.producer]
        out = []
        for proc in (p for p in procs if p is not None):
            state = "alive" if proc.alive() else "exited"
            try:
                tail = [line[:240] for line in proc.output().splitlines() if line.strip()][-lines:]
            except OSError as exc:
                tail = [f"(no log: {exc})"]
            out += [f"{proc.name} pid {proc.pid} ({state}):", *(f"  {line}" for line in tail)]
        return out

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
