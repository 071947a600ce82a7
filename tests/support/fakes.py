"""In-memory fakes of the fleet's ports (vkec2/ports.py), so the state machine is tested in milliseconds.

:class:`FakeStore` and :class:`FakeLock` model what the Redis store guarantees: a pod record kept as
the same flat string hash (encoded and decoded with :class:`~vkec2.domain.models.PodRecord`), a lock
whose taking bumps the record's ``fence``, fenced writes that refuse a stale fence with
:class:`~vkec2.errors.StaleFence` exactly as the Lua compare-and-set does, and the status event of
each write appended to the node's outbox in the same call; it also keeps the fleet's "no capacity"
marks on its clock. :class:`FakeEc2` keeps instances whose state and tags a test sets, honours
RunInstances' ClientToken (the same token returns the same instance; descriptions carry the
token), answers the capacity errors a test programs per instance type and subnet
(``no_capacity``), can hide an instance as EC2's
eventual consistency does (NotFound by ID, absent from listings, until revealed), runs a test's
hook in the middle of a call (a slow call during which another task takes the pod over) and logs
every call; :class:`~tests.support.fakedue.FakeDue` (the due set of pod steps in flight) is the
store's. The agents' fake is :mod:`tests.support.fakeagents`.
Nothing here sleeps or opens a socket. mypy proves at the end of this module that each fake
satisfies its port.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tests.support.fakedue import FakeDue
from tests.support.fakehosts import FakeHostsEc2, FakeHostStore
from tests.support.faketypes import FakeInstanceTypes
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.breaker import BreakerState
from vkec2.domain.instances import LIVE_STATES, Instance, pod_tags, tag_map
from vkec2.domain.models import DueStep, PodRecord, StatusEvent
from vkec2.domain.podspec import LaunchParams
from vkec2.errors import Ec2Error, LockBusy, StaleFence, UnknownPod

LOCK_TTL_MS = 60_000
#: The run-lock name FakeStore.sweep_flight holds (tests take it to stand for another sweeper).
SWEEP_FLIGHT = "health-sweep"


# -- the store -------------------------------------------------------------------------------


class FakeLock:
    """A held pod lock of a :class:`FakeStore`: fenced writes and extensions, like the Redis Lock."""

    def __init__(self, store: FakeStore, uid: str, fence: int, ttl_ms: int) -> None:
        self.store, self.uid, self.fence, self.ttl_ms = store, uid, fence, ttl_ms
        self.extensions: list[int] = []
        self.guards = 0
        self.record: PodRecord | None = None  # the record read with the lock (step_locked)

    def write(self, values: Mapping[str, Any], event: StatusEvent | None = None, node: str = "") -> None:
        self.store.write(self.uid, self.fence, values, event, node)

    def schedule_next(self, next_task: str, step: DueStep, due_at: float) -> None:
        self.write({"next_task": next_task})  # the fenced write, then the due step (one Lua call in Redis)
        self.store.due.schedule(step, due_at)

    def finish_chain(self, task: str) -> bool:
        if self.store.fence(self.uid) != self.fence:
            return False
        return self.store.due.finish(self.uid, task)

    def extend(self, ttl_ms: int | None = None) -> bool:
        self.extensions.append(ttl_ms or self.ttl_ms)
        return self.store.holder(self.uid) is self

    def guard(self) -> None:
        """The Redis guard: extend only while this lock is held and its fence is the record's."""
        self.guards += 1
        if self.store.holder(self.uid) is not self or self.store.fence(self.uid) != self.fence:
            raise StaleFence(f"pod {self.uid}: lock or fence {self.fence} lost; another task owns the pod")
        self.extensions.append(self.ttl_ms)


class FakeStore(FakeHostStore):
    """One cluster's pod records, locks, run locks, warm-pool claims and outbox, in memory."""

    def __init__(self, cluster: str = "unit", clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.hashes: dict[str, dict[str, str]] = {}
        self.outbox: dict[str, list[StatusEvent]] = {}
        self.writes: list[tuple[str, dict[str, Any]]] = []  # (uid, values) of every accepted write
        self.ready: dict[str, list[tuple[str, Instance]]] = {}  # warm pool -> Ready members
        self.flights: set[str] = set()
        self.marks: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}  # offering -> (until, answer)
        self.breaker = BreakerState()  # the health sweep's remediation breaker
        self._held: dict[str, FakeLock] = {}
        self._mutex = threading.Lock()
        self.due = FakeDue()  # the due set of pod steps in flight

    # -- seeding and inspecting (test helpers) --------------------------------------------

    def put(self, rec: PodRecord) -> None:
        """Store ``rec`` as it is (every field), as if the producer and earlier steps wrote it."""
        values = rec.to_dict()
        self.hashes[rec.uid] = PodRecord.encode(values)

    def events(self, node: str) -> list[StatusEvent]:
        return list(self.outbox.get(node, []))

    def postpone(self, uid: str, task: str, due_at: float) -> bool:
        return self.due.postpone(uid, task, due_at)

    def holder(self, uid: str) -> FakeLock | None:
        return self._held.get(uid)

    def fence(self, uid: str) -> int:
        return int(self.hashes.get(uid, {}).get("fence", "0"))

    def steal(self, uid: str) -> int:
        """Another task takes the pod's lock after ours expired: the fence moves on; returns it."""
        fence = int(self.hashes[uid].get("fence", "0")) + 1
        self.hashes[uid]["fence"] = str(fence)
        self._held.pop(uid, None)
        return fence

    def add_ready(self, pool: str, instance: Instance) -> None:
        """Put ``instance`` in ``pool``'s ready set (what a warm-pool reconcile does)."""
        self.ready.setdefault(pool, []).append((instance["InstanceId"], copy.deepcopy(instance)))

    # -- the PodStore port ----------------------------------------------------------------

    def get(self, uid: str) -> PodRecord | None:
        raw = self.hashes.get(uid)
        if not raw or "uid" not in raw:
            return None
        return PodRecord.from_hash(dict(raw))

    def uids(self, node: str | None = None) -> set[str]:
        return {uid for uid, raw in self.hashes.items() if node is None or raw.get("node") == node}

    def records(self, node: str | None = None) -> list[PodRecord]:
        return [rec for uid in sorted(self.uids(node)) if (rec := self.get(uid)) is not None]

    @contextmanager
    def locked(
        self, uid: str, ttl_ms: int = LOCK_TTL_MS, *, max_hold_s: float | None = None
    ) -> Iterator[FakeLock]:
        with self._mutex:
            if uid not in self.hashes:
                raise UnknownPod(f"no pod record for uid {uid}")
            if uid in self._held:
                raise LockBusy(f"pod {uid} is locked by another task")
            fence = int(self.hashes[uid].get("fence", "0")) + 1
            self.hashes[uid]["fence"] = str(fence)
            lock = FakeLock(self, uid, fence, ttl_ms)
            self._held[uid] = lock
        try:
            yield lock
        finally:
            with self._mutex:
                if self._held.get(uid) is lock:
                    del self._held[uid]

    @contextmanager
    def step_locked(
        self, uid: str, ttl_ms: int = LOCK_TTL_MS, *, max_hold_s: float | None = None
    ) -> Iterator[FakeLock]:
        """The lock with the record read with it; unlike Redis's step lock, its writes are not deferred."""
        with self.locked(uid, ttl_ms, max_hold_s=max_hold_s) as lock:
            lock.record = self.get(uid)
            yield lock

    @contextmanager
    def sweep_flight(self, ttl_ms: int) -> Iterator[bool]:
        key = SWEEP_FLIGHT
        with self._mutex:
            held = key not in self.flights
            self.flights.add(key)
        try:
            yield held
        finally:
            if held:
                self.flights.discard(key)

    def remediation_breaker(self) -> BreakerState:
        return self.breaker

    def put_remediation_breaker(self, state: BreakerState) -> None:
        self.breaker = state

    def write(
        self,
        uid: str,
        fence: int,
        values: Mapping[str, Any],
        event: StatusEvent | None = None,
        node: str = "",
    ) -> None:
        """The compare-and-set of the Redis store: fields and outbox event together, or StaleFence."""
        with self._mutex:
            raw = self.hashes.get(uid)
            if raw is None or "fence" not in raw:
                raise UnknownPod(f"no pod record for uid {uid}")
            if raw["fence"] != str(fence):
                raise StaleFence(f"pod {uid}: fence {fence} is stale; another task owns the pod")
            raw.update(PodRecord.encode({**values, "updated_at": self.clock()}))
            self.writes.append((uid, copy.deepcopy(dict(values))))
            if event is not None:  # through the stream's flat string map, as the producer reads it
                self.outbox.setdefault(node or "-", []).append(StatusEvent.from_fields(event.to_fields()))

    # -- the WarmPoolClaims port ----------------------------------------------------------

    def claim_ready(self, pool: str) -> tuple[str, dict[str, Any]] | None:
        members = self.ready.get(pool)
        if not members:
            return None
        return members.pop(0)

    # -- the OfferingMarks port ----------------------------------------------------------

    def mark_unavailable(
        self, instance_type: str, zone: str, answer: Mapping[str, Any], ttl_seconds: float
    ) -> None:
        self.marks[(instance_type, zone)] = (self.clock() + ttl_seconds, dict(answer))

    def unavailable(self, offerings: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        live = {k: v for k, (until, v) in self.marks.items() if until > self.clock()}
        return {pair: dict(live[pair]) for pair in offerings if pair in live}


# -- EC2 ---------------------------------------------------------------------------------------


class FakeEc2(FakeHostsEc2, FakeInstanceTypes):
    """Instances in memory: states and tags a test sets, ClientToken idempotency, a call log."""

    def __init__(self, cluster: str = "unit", launch_state: str = "pending") -> None:
        self.cluster = cluster
        self.launch_state = launch_state
        self.instances: dict[str, Instance] = {}
        self.tokens: dict[str, str] = {}  # ClientToken -> (the first) instance ID it launched
        self.launches: dict[str, list[str]] = {}  # ClientToken -> every instance ID it launched
        self.launch_limit = 1000  # the most instances one RunInstances launches (partial fulfilment)
        self.impaired_ids: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: dict[str, Exception] = {}  # action -> error to raise on every call of it
        # (instance type or None, subnet or None) -> AWS code RunInstances answers (None: any)
        self.no_capacity: dict[tuple[str | None, str | None], str] = {}
        self.zones: dict[str, str] = {}  # subnet -> zone (others: unknown)
        self.hooks: dict[str, Callable[[], None]] = {}  # action -> run once, in the middle of its call
        self.hidden: set[str] = set()  # instances EC2 does not show yet (eventual consistency)
        self.launch_hidden = False  # hide every instance RunInstances launches until revealed
        self.console: dict[str, str] = {}  # instance ID -> its console output (GetConsoleOutput)
        self._ids = itertools.count(1)
        self._mutex = threading.Lock()

    # -- test helpers ----------------------------------------------------------------------

    def add(
        self,
        *,
        state: str = "running",
        tags: Mapping[str, str] | None = None,
        private_ip: str | None = "auto",
        launch_time: str = "",
        image_id: str = "ami-0123456789abcdef0",
        instance_type: str = "m5.large",
        client_token: str = "",
    ) -> Instance:
        """A new instance of the cluster (tagged with it) in ``state``; its description (with
        ``ClientToken`` when one is given, as if RunInstances had launched it with that token)."""
        n = next(self._ids)
        iid = f"i-{n:017x}"
        instance: Instance = {
            "InstanceId": iid,
            "ImageId": image_id,
            "InstanceType": instance_type,
            "State": {"Name": state},
            "LaunchTime": launch_time or f"2024-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}+00:00",
            "Tags": [{"Key": k, "Value": v} for k, v in {TAG_CLUSTER: self.cluster, **(tags or {})}.items()],
        }
        if client_token:
            instance["ClientToken"] = client_token
            self.tokens.setdefault(client_token, iid)
        if private_ip is not None:
            instance["PrivateIpAddress"] = (
                f"10.0.{n // 256 % 256}.{n % 256}" if private_ip == "auto" else private_ip
            )
        self.instances[iid] = instance
        return copy.deepcopy(instance)

    def set_state(self, instance_id: str, state: str) -> None:
        self.instances[instance_id]["State"] = {"Name": state}

    def state(self, instance_id: str) -> str:
        return str(self.instances[instance_id]["State"]["Name"])

    def actions(self) -> list[str]:
        return [action for action, _ in self.calls]

    def calls_of(self, action: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == action]

    def reveal(self, instance_id: str | None = None) -> None:
        """EC2 has caught up: show ``instance_id`` (every hidden instance when None)."""
        if instance_id is None:
            self.hidden.clear()
        else:
            self.hidden.discard(instance_id)

    def _call(self, action: str, **args: Any) -> None:
        with self._mutex:
            self.calls.append((action, args))
        hook = self.hooks.pop(action, None)
        if hook is not None:  # a slow call: something happens elsewhere before it answers
            hook()
        error = self.errors.get(action)
        if error is not None:
            raise error

    def _live(self, states: Sequence[str]) -> list[Instance]:
        return [
            copy.deepcopy(i)
            for i in self.instances.values()
            if tag_map(i).get(TAG_CLUSTER) == self.cluster
            and i["State"]["Name"] in states
            and i["InstanceId"] not in self.hidden
        ]

    # -- the Ec2 port ----------------------------------------------------------------------

    def find_pod_instances(self, uid: str) -> list[Instance]:
        self._call("DescribeInstances", pod_uid=uid)
        return [i for i in self._live(LIVE_STATES) if tag_map(i).get(TAG_POD_UID) == uid]

    def pod_instance_history(self, uid: str) -> list[Instance]:
        self._call("DescribeInstances", pod_uid=uid, states="any")
        every = {i["State"]["Name"] for i in self.instances.values()}
        return [i for i in self._live(tuple(every)) if tag_map(i).get(TAG_POD_UID) == uid]

    def cluster_instances(self, states: Sequence[str] = LIVE_STATES) -> list[Instance]:
        self._call("DescribeInstances", states=list(states))
        return self._live(states)

    def describe(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        ids = list(dict.fromkeys(instance_ids))
        self._call("DescribeInstances", instance_ids=ids)
        return {iid: copy.deepcopy(self.instances[iid]) for iid in ids if self._known(iid)}

    def _known(self, instance_id: str) -> bool:
        return instance_id in self.instances and instance_id not in self.hidden

    def impaired(self) -> dict[str, str]:
        self._call("DescribeInstanceStatus")
        return dict(self.impaired_ids)

    def console_output(self, instance_id: str) -> str:
        self._call("GetConsoleOutput", instance_id=instance_id)
        return self.console.get(instance_id, "")

    def pod_tags(self, pod: Mapping[str, Any], node: str) -> dict[str, str]:
        return pod_tags(self.cluster, pod, node)

    def run_instance(self, params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        return self.run_instances(params, tags, token, 1)[0]

    def run_instances(
        self, params: LaunchParams, tags: Mapping[str, str], token: str, count: int
    ) -> list[Instance]:
        all_tags = {**dict(params.tags), **tags}
        self._call(
            "RunInstances",
            ClientToken=token,
            ImageId=params.image_id,
            InstanceType=params.instance_type,
            SubnetId=params.subnet_id,
            Tags=all_tags,
            CapacityType=params.capacity_type,
            MaxCount=count,
        )
        kind, subnet = params.instance_type, params.subnet_id
        for key in ((kind, subnet), (kind, None), (None, subnet), (None, None)):
            if (code := self.no_capacity.get(key)) is not None:
                raise Ec2Error(f"RunInstances: {code}: no {kind} capacity", code=code, capacity=True)
        if token in self.launches:  # EC2 answers a repeated token with the instances it launched
            return [copy.deepcopy(self.instances[iid]) for iid in self.launches[token]]
        launched = []
        for index in range(min(count, self.launch_limit)):
            instance = self.add(
                state=self.launch_state,
                tags=all_tags,
                image_id=params.image_id,
                instance_type=params.instance_type,
                client_token=token,
            )
            instance["AmiLaunchIndex"] = self.instances[instance["InstanceId"]]["AmiLaunchIndex"] = index
            if self.launch_hidden:
                self.hidden.add(instance["InstanceId"])
            launched.append(instance)
        self.launches[token] = [i["InstanceId"] for i in launched]
        return launched

    def subnet_zones(self, subnet_ids: Sequence[str]) -> dict[str, str]:
        self._call("DescribeSubnets", SubnetIds=list(subnet_ids))
        return {s: self.zones[s] for s in subnet_ids if s in self.zones}

    def create_tags(self, instance_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        if not instance_ids:
            return
        self._call("CreateTags", Resources=list(instance_ids), Tags=dict(tags))
        unknown = [iid for iid in instance_ids if iid in self.hidden]
        if unknown:
            raise Ec2Error(f"CreateTags: {unknown[0]} not found", code="InvalidInstanceID.NotFound")
        for iid in instance_ids:
            if iid in self.instances:
                merged = {**tag_map(self.instances[iid]), **tags}
                self.instances[iid]["Tags"] = [{"Key": k, "Value": v} for k, v in merged.items()]

    def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return []
        self._call("TerminateInstances", InstanceIds=ids)
        for iid in ids:
            if self._known(iid):
                self.set_state(iid, "terminated")
        return [iid for iid in ids if not self._known(iid)]  # NotFound: gone, or not visible yet

    def terminate_soon(self, instance_ids: Sequence[str]) -> list[str] | None:
        return self.terminate(instance_ids)  # no other pods to share a call with: sent at once

    def terminated(self) -> list[str]:
        """Every instance ID sent to TerminateInstances, in order."""
        return [iid for args in self.calls_of("TerminateInstances") for iid in args["InstanceIds"]]


if TYPE_CHECKING:
    from vkec2.ports import DueStore, Ec2, LaunchStore, PodLock, PodStore

    def _fakes_satisfy_ports(
        store: FakeStore, lock: FakeLock, ec2: FakeEc2
    ) -> tuple[PodStore, PodLock, LaunchStore, Ec2, DueStore]:
        """Never runs: mypy proves here that each fake satisfies its port (vkec2/ports.py)."""
        return store, lock, store, ec2, store.due
