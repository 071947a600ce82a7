"""The servers and the measured runs the fleet benchmark (``bench/bench_fleet.py``) is made of.

:class:`Servers` starts a private Redis, moto, the agent simulator (reading moto directly) and the
AWS-like EC2 double in front of moto on free loopback ports, and stops them by PID. :func:`create`
and :func:`delete` drive a :class:`~tests.support.fleet.FleetHarness` the way the producer does and
measure each pod from Redis-side times (the record's creation or the delete's submission to the
pod's Running or Terminated event in the status outbox). Every wait is bounded: a run that times
out returns what it reached (``complete`` False) instead of raising. :func:`audit` checks a run's
instances against the double's event log and moto's own list (duplicates, leaks);
:func:`fleet_overrides` gives a run's fleet the settings as deployed and :func:`start_workers` starts
its worker processes. Plumbing for one benchmark, so no library does it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import psutil

from tests.support.awslike import AWS_REQUEST_BUCKETS, AwsLike, Bucket
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import NODE, FleetHarness, example_pod
from vkec2.broker.app import worker_argv
from vkec2.cli.procs import ManagedProcess, start_agent_sim, start_moto, start_redis
from vkec2.config import AwsSettings, Settings
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.models import Phase

QUEUES = ("pods", "health", "maintenance")  # as FleetHarness.start_worker
THREADS = 8  # worker threads per process (Celery's threads pool)
#: CPU seconds each process used so far, by PID: (its role, seconds).
CpuTimes = dict[int, tuple[str, float]]
#: The batch tag of batched launches (the lead's ``vkec2.io/launch-batch``; absent before batching).
TAG_LAUNCH_BATCH = "vkec2.io/launch-batch"
#: AWS's instance-launch resource bucket (1,000 instances, 2 per second), when the double models it.
INSTANCE_BUCKET = Bucket(1000, 2)


def has_resource_buckets() -> bool:
    """Whether this build's EC2 double models AWS's resource-token buckets."""
    return "resource_buckets" in {f.name for f in fields(AwsLike)}


def has_launch_batching() -> bool:
    """Whether this build of vkec2 batches RunInstances (``aws.launch_batch_window_seconds``)."""
    return "launch_batch_window_seconds" in AwsSettings.model_fields


def aws_buckets() -> AwsLike:
    """Setting (b): AWS's request buckets at the endpoint, and its instance bucket where modelled.
    No lag, no slow transitions, no random throttling: only the refill limits the rate."""
    aws = AwsLike(buckets=AWS_REQUEST_BUCKETS)
    if has_resource_buckets():
        aws = replace(aws, **cast(dict[str, Any], {"resource_buckets": {"RunInstances": INSTANCE_BUCKET}}))
    return aws


@dataclass
class Servers:
    """Redis, moto, the simulator and the EC2 double, all private to one benchmark run."""

    procs: list[ManagedProcess] = field(default_factory=list)
    fleets: list[FleetHarness] = field(default_factory=list)
    proxy: Ec2Proxy | None = None
    redis_url: str = ""
    moto_url: str = ""
    sim_endpoint: str = ""
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-fleet-")))
    _db: int = 0

    def start(self) -> Servers:
        for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            os.environ[key] = value
        os.environ["AWS_DEFAULT_REGION"] = "us-west-2"
        redis_proc, self.redis_url = start_redis()
        self.procs.append(redis_proc)
        moto, self.moto_url = start_moto()
        self.procs.append(moto)
        sim, self.sim_endpoint = start_agent_sim(self.moto_url, extra_args=["--log-level", "WARNING"])
        self.procs.append(sim)
        self.proxy = Ec2Proxy(self.moto_url).start()
        return self

    @property
    def ec2(self) -> Ec2Proxy:
        assert self.proxy is not None, "servers not started"
        return self.proxy

    def fleet(self, overrides: Mapping[str, Any], aws: AwsLike) -> FleetHarness:
        """A new fleet (own cluster name and Redis database) behind the double, which behaves as ``aws``
        from now on; the harness observes moto directly (its checks are neither throttled nor counted)."""
        self._db += 1
        self.ec2.configure(aws)
        self.ec2.reset_counts()
        self.ec2.log.clear()
        fleet = FleetHarness(
            self.tmp,
            f"{self.redis_url}/{self._db}",
            self.ec2.url,
            self.sim_endpoint,
            overrides,
            observe_url=self.moto_url,
        )
        self.fleets.append(fleet)
        return fleet

    def retire(self, fleet: FleetHarness) -> None:
        """Stop a fleet's processes (its instances were deleted or are terminated by :meth:`stop`)."""
        fleet.stop()
        if fleet in self.fleets:
            self.fleets.remove(fleet)

    def stop(self) -> None:
        for fleet in self.fleets:
            fleet.stop()
        if self.proxy is not None:
            self.proxy.stop()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs, self.fleets, self.proxy, self._db = [], [], None, 0

    def fresh(self) -> Servers:
        """Stop everything and start anew, so moto forgets every instance: a moto holding thousands
        answers RunInstances and DescribeInstances slowly enough to be the bottleneck itself."""
        self.stop()
        return self.start()


def outbox_times(fleet: FleetHarness, phase: Phase) -> dict[str, float]:
    """Each pod's first event of ``phase`` in the status outbox, as the entry's Redis time (seconds)."""
    reached: dict[str, float] = {}
    entries = cast(list[tuple[str, dict[str, str]]], fleet.store.redis.xrange(fleet.store.keys.outbox(NODE)))
    for entry_id, data in entries:
        if data.get("phase") == phase.value:
            reached.setdefault(data["uid"], int(entry_id.split("-")[0]) / 1000)
    return reached


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; whether it held (never raises)."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


@dataclass
class Run:
    """One measured batch of creates or deletes: per-pod seconds of those that got there."""

    pods: int
    started: float  # wall clock of the first submit
    reached: dict[str, float]  # uid -> wall clock of its Running (or Terminated) event
    seconds: list[float]  # per pod: submit or creation -> the event
    complete: bool

    @property
    def done(self) -> int:
        return len(self.reached)

    @property
    def wall(self) -> float:
        """First submit to the last pod there (the timeout's end when incomplete)."""
        return (max(self.reached.values()) - self.started) if self.reached else float("nan")

    @property
    def rate(self) -> float:
        return self.done / self.wall if self.reached and self.wall > 0 else 0.0


def create(
    fleet: FleetHarness,
    pods: int,
    timeout: float,
    *,
    rate: float | None = None,
    prefix: str = "bench",
    during: Callable[[list[str]], None] | None = None,
) -> tuple[list[str], Run]:
    """Submit ``pods`` pods (``rate`` per second, or all at once) and wait up to ``timeout`` s for Running.

    ``during`` is called with the UIDs once all are submitted (worker kills). create→Running per pod
    is its Running event minus the record's creation (both Redis-side)."""
    started = time.time()
    uids: list[str] = []
    for i in range(pods):
        if rate:
            pause = started + i / rate - time.time()
            if pause > 0:
                time.sleep(pause)
        uids.append(fleet.submit(example_pod(f"{prefix}-{i}")))
    if during is not None:
        during(uids)
    end = started + timeout

    def all_running() -> bool:
        return len(outbox_times(fleet, Phase.RUNNING).keys() & set(uids)) == len(uids)

    complete = wait_for(all_running, max(0.0, end - time.time()), interval=0.5)
    reached = {u: t for u, t in outbox_times(fleet, Phase.RUNNING).items() if u in set(uids)}
    created = {u: fleet.record(u).created_at for u in reached}
    return uids, Run(pods, started, reached, [reached[u] - created[u] for u in reached], complete)


def delete(fleet: FleetHarness, uids: list[str], timeout: float) -> Run:
    """Delete ``uids`` at once; delete→gone per pod is its Terminated event minus the delete's submit."""
    started = time.time()
    for uid in uids:
        fleet.delete(uid)
    wanted = set(uids)

    def all_gone() -> bool:
        return len(outbox_times(fleet, Phase.TERMINATED).keys() & wanted) == len(wanted)

    complete = wait_for(all_gone, timeout, interval=0.5)
    reached = {u: t for u, t in outbox_times(fleet, Phase.TERMINATED).items() if u in wanted}
    return Run(len(uids), started, reached, [t - started for t in reached.values()], complete)


@dataclass(frozen=True)
class Audit:
    """What a run left in EC2: pods with two live instances, instances nobody owns, live leftovers."""

    launched: int  # instances RunInstances answered with (the double's log)
    duplicates: int  # pods with more than one instance that is still live, or recorded elsewhere
    orphans: int  # launched instances neither recorded by a pod nor terminated
    live: int  # live (pending/running) instances of the cluster
    batches: int  # distinct launch-batch tags seen (0 without batching)


def audit(fleet: FleetHarness, proxy: Ec2Proxy, uids: list[str]) -> Audit:
    """Every launched instance belongs to exactly one pod or was terminated (by pod-UID and batch tag)."""
    launched = set(proxy.log.launched())
    listing = fleet.instances(("pending", "running", "shutting-down", "terminated", "stopping", "stopped"))
    live_states = {"pending", "running"}
    owner: dict[str, str] = {}
    live: set[str] = set()
    batches: set[str] = set()
    per_pod_live: dict[str, int] = {}
    for inst in listing:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        iid = inst["InstanceId"]
        if tags.get(TAG_LAUNCH_BATCH):
            batches.add(tags[TAG_LAUNCH_BATCH])
        if tags.get(TAG_POD_UID):
            owner[iid] = tags[TAG_POD_UID]
        if inst["State"]["Name"] in live_states and tags.get(TAG_CLUSTER) == fleet.cluster:
            live.add(iid)
            if iid in owner:
                per_pod_live[owner[iid]] = per_pod_live.get(owner[iid], 0) + 1
    recorded: dict[str, str] = {}
    for uid in uids:
        rec = fleet.store.get(uid)
        if rec is not None and rec.instance_id:
            recorded[rec.instance_id] = uid
    duplicates = sum(1 for n in per_pod_live.values() if n > 1)
    duplicates += sum(1 for iid, uid in recorded.items() if owner.get(iid, uid) != uid)
    orphans = sum(1 for iid in launched & live if iid not in recorded and iid not in owner)
    return Audit(len(launched), duplicates, orphans, len(live), len(batches))


def running_after_launch(fleet: FleetHarness, proxy: Ec2Proxy, reached: Mapping[str, float]) -> list[float]:
    """Per pod: its Running event minus the RunInstances answer that launched its instance."""
    launched_at: dict[str, float] = {}
    for event in proxy.log.run_requests():
        for iid in event.launched:
            launched_at.setdefault(iid, event.at)
    out: list[float] = []
    for uid, at in reached.items():
        rec = fleet.store.get(uid)
        if rec is not None and rec.instance_id in launched_at:
            out.append(at - launched_at[rec.instance_id])
    return out


def terminate_all(fleet: FleetHarness) -> int:
    """Terminate the cluster's live instances in moto directly (a run that skips its deletes)."""
    ids = [i["InstanceId"] for i in fleet.instances(("pending", "running"))]
    for chunk in range(0, len(ids), 500):
        fleet.ec2.terminate_instances(InstanceIds=ids[chunk : chunk + 500])
    return len(ids)


def cpu_times(servers: Servers, fleet: FleetHarness) -> CpuTimes:
    """CPU seconds (user + system) each live process has used so far, by PID: (its role, seconds).
    Roles: the servers' names (redis, moto, the simulator), the fleet's workers and beat, and this
    process (the EC2 double and the harness)."""
    out: CpuTimes = {}
    procs = [(p.name, p.pid) for p in servers.procs]
    procs += [("workers" if "worker" in p.name else p.name, p.pid) for p in fleet.workers if p.alive()]
    for role, pid in [*procs, ("bench + EC2 double", os.getpid())]:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = (role, times.user + times.system)
    return out


def cpu_note(before: CpuTimes, after: CpuTimes, wall: float) -> str:
    """Where the CPU of a run went, by role, beside what the machine's cores offered in ``wall`` s
    (a process that died during the run is not counted)."""
    roles: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        roles[role] = roles.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    used = sum(roles.values())
    offered = (os.cpu_count() or 1) * wall
    parts = ", ".join(f"{role} {sec:.0f}" for role, sec in sorted(roles.items(), key=lambda kv: -kv[1]))
    return f"CPU-s {used:.0f} of {offered:.0f} offered: {parts}"


def fleet_overrides(batching: bool = True, *, aws: AwsLike | None = None, **more: Any) -> dict[str, Any]:
    """The fleet's settings for a run: as deployed (the broker's visibility timeout, the countdown
    ceiling, EC2 timeouts and attempts, launches batched with the shipped window: the test harness
    shortens or turns off each), or batching off when asked. Against an endpoint without buckets
    (``aws`` given without any), the fleet's own EC2 rate limits are off too, so setting (a) measures
    this machine, not the fleet's client-side budget of 2 RunInstances per second."""
    # As deployed, not the test harness's short timeouts and countdowns (a pod waiting for its launch
    # slot comes back at most every celery.max_countdown_seconds).
    deployed = Settings()
    out: dict[str, Any] = {
        "celery": {
            "visibility_timeout_seconds": deployed.celery.visibility_timeout_seconds,
            "max_countdown_seconds": deployed.celery.max_countdown_seconds,
        },
        "aws": {
            "connect_timeout_seconds": deployed.aws.connect_timeout_seconds,
            "read_timeout_seconds": deployed.aws.read_timeout_seconds,
            "max_attempts": deployed.aws.max_attempts,
        },
        "rate_limits": {"max_wait_seconds": deployed.rate_limits.max_wait_seconds},
        **more,
    }
    if aws is not None and not aws.buckets:
        out["rate_limits"]["enabled"] = False
    if has_launch_batching():
        window = deployed.aws.launch_batch_window_seconds if batching else 0
        out["aws"]["launch_batch_window_seconds"] = window
    return out


def start_workers(fleet: FleetHarness, workers: int, threads: int = THREADS, timeout: float = 90) -> None:
    """Start ``workers`` worker processes at once and wait until each is ready (in parallel, unlike
    :meth:`FleetHarness.start_worker`, to keep the quick mode quick)."""
    procs = []
    for _ in range(workers):
        name = f"w{len(fleet.workers)}-{fleet.cluster}@localhost"
        proc = ManagedProcess(
            "worker", worker_argv(name, concurrency=threads, queues=QUEUES), env=fleet.env()
        )
        fleet.workers.append(proc.start())
        procs.append(proc)

    def ready() -> bool:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.output()[-3000:]}")
        return all("ready." in proc.output() for proc in procs)

    if not wait_for(ready, timeout, interval=0.2):
        raise RuntimeError(f"{workers} workers not ready within {timeout:.0f} s")
