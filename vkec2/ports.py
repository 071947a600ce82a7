"""The ports of the fleet logic: what :mod:`vkec2.fleet` needs of the store, EC2 and the agents, as Protocols.

The state machine (:class:`~vkec2.fleet.lifecycle.Lifecycle`), the health sweep
(:class:`~vkec2.fleet.sweep.HealthSweep`), the warm pools and the orphan GC are written against
these structural types rather than against the Redis store, the boto3 gateway and the gRPC client,
so the same rules run on in-memory fakes in unit tests (``tests/support/fakes.py``) in
milliseconds. Each Protocol lists exactly the calls its consumers make, with the adapters'
signatures: :class:`PodLock` and :class:`PodStore` are met by :class:`vkec2.store.redis_store.Lock`
and :class:`~vkec2.store.redis_store.Store`, :class:`WarmPoolClaims`, :class:`OfferingMarks`,
:class:`LaunchStore` and :class:`DueStore` by the same store, :class:`Ec2`
by :class:`vkec2.ec2.gateway.Ec2Gateway` and :class:`Agents` by
:class:`vkec2.agent_client.client.AgentClient`. The adapters never import this module (they satisfy
it structurally); ``tasks/runtime.py`` has mypy prove that each one does. The value types exchanged
here live in :mod:`vkec2.domain`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from vkec2.domain.agents import AgentTarget, AppStatus
from vkec2.domain.beat import BeatSignals
from vkec2.domain.breaker import BreakerState
from vkec2.domain.hosts import HostRecord, HostRequest
from vkec2.domain.instances import Instance
from vkec2.domain.models import DueStep, PodRecord, StatusEvent
from vkec2.domain.podspec import LaunchParams


class PodLock(Protocol):
    """A held pod lock: fenced writes of the record (with the outbox event) and a longer lease."""

    @property
    def ttl_ms(self) -> int: ...

    def write(self, values: Mapping[str, Any], event: StatusEvent | None = None, node: str = "") -> None:
        """Set record fields and append ``event`` to ``node``'s outbox, atomically; refused if stale."""
        ...

    def extend(self, ttl_ms: int | None = None) -> bool:
        """Push the lock's expiry out; False if it was lost meanwhile."""
        ...

    def guard(self) -> None:
        """Immediately before a side effect: extend the lock by its TTL if it and the fence still
        hold, else raise :class:`~vkec2.errors.StaleFence` (the pod belongs to another task now)."""
        ...


class PodStore(Protocol):
    """Pod records, their locks and the sweep's single-flight lock (what the health sweep uses)."""

    def get(self, uid: str) -> PodRecord | None: ...

    def records(self, node: str | None = None) -> list[PodRecord]: ...

    def locked(
        self, uid: str, ttl_ms: int = ..., *, max_hold_s: float | None = None
    ) -> AbstractContextManager[PodLock]:
        """Hold the pod's lock (taking it bumps the record's fence); LockBusy if another task has it.

        With ``max_hold_s`` the lock is kept alive while held, for at most that long.
        """
        ...

    def sweep_flight(self, ttl_ms: int) -> AbstractContextManager[bool]:
        """Hold the health sweep's run lock if nobody else does; yields whether it is held."""
        ...

    def remediation_breaker(self) -> BreakerState:
        """The health sweep's remediation breaker as the last pass left it."""
        ...

    def put_remediation_breaker(self, state: BreakerState) -> None: ...


class FleetSignalStore(Protocol):
    """What the producer, the CLI and the metrics read of the breaker and of beat's traces."""

    def remediation_breaker(self) -> BreakerState: ...

    def beat_signals(self) -> BeatSignals:
        """Whether RedBeat's lock is held, and the newest periodic run."""
        ...


class WarmPoolClaims(Protocol):
    """Taking a Ready member out of a warm pool (what the create step uses of the store)."""

    def claim_ready(self, pool: str) -> tuple[str, dict[str, Any]] | None: ...


class OfferingMarks(Protocol):
    """The fleet-wide marks of (instance type, zone) pairs that just answered "no capacity"."""

    def mark_unavailable(
        self, instance_type: str, zone: str, answer: Mapping[str, Any], ttl_seconds: float
    ) -> None: ...

    def unavailable(self, offerings: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The marked pairs among ``offerings``, each with the EC2 answer it was marked with."""
        ...


class DueStore(Protocol):
    """The due times of pod steps in flight (what the resume pass uses of the store)."""

    def claim_due(
        self, cutoff: float, now: float, backoff: Callable[[int], float], limit: int = ...
    ) -> list[DueStep]:
        """Take the steps due before ``cutoff`` whose pod lock is free; each is due again later."""
        ...

    def oldest_queued_at(self, queue: str) -> float | None:
        """When the oldest message waiting in ``queue`` was published; None when there is none."""
        ...


class HostClaims(Protocol):
    """The host pools' mirror, slot claims and allocation bookkeeping (:mod:`vkec2.store.hosts`)."""

    def host_records(self, pool: str) -> list[HostRecord]: ...

    def put_hosts(self, pool: str, records: Iterable[HostRecord]) -> None: ...

    def claim_host(self, pool: str, uid: str, now: float) -> str | None:
        """Atomically take a slot for the pod on an available host of ``pool``; its ID, or None."""
        ...

    def drop_host_claim(self, pool: str, host_id: str, uid: str) -> bool: ...

    def host_allocation_intent(self, pool: str) -> int:
        """The allocation in flight (its sequence number), or a new one, now in flight."""
        ...

    def clear_host_allocation_intent(self, pool: str) -> None: ...

    def host_slot_floor(self, pool: str, highest_seen: int) -> int: ...

    def host_allocation_flight(self, pool: str, ttl_ms: int = ...) -> AbstractContextManager[bool]: ...

    def host_quota(self, family: str) -> float | None: ...


class HostPoolStore(HostClaims, Protocol):
    """What the hosts pass uses of the store: the claims, the pods behind them, and its run lock."""

    def get(self, uid: str) -> PodRecord | None: ...

    def forget_hosts(self, pool: str, host_ids: Iterable[str]) -> None: ...

    def put_host_claims(self, pool: str, host_id: str, claims: Mapping[str, float]) -> None: ...

    def hosts_pass_flight(self, ttl_ms: int = ...) -> AbstractContextManager[bool]: ...


class LaunchStore(WarmPoolClaims, OfferingMarks, HostClaims, Protocol):
    """What the create step uses of the store: warm-pool claims, the capacity marks, host slots."""


class Ec2(Protocol):
    """The EC2 calls of the lifecycle, the health sweep, the warm pools and the orphan GC."""

    def find_pod_instances(self, uid: str) -> list[Instance]:
        """The cluster's live instances tagged with this pod UID."""
        ...

    def pod_instance_history(self, uid: str) -> list[Instance]:
        """Every instance tagged with this pod UID in any state (terminated and shutting-down ones
        too), with its ``ClientToken``: what the pod ever launched."""
        ...

    def cluster_instances(self, states: Sequence[str] = ...) -> list[Instance]:
        """Every instance tagged for the cluster in ``states`` (by default the live ones)."""
        ...

    def describe(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        """Descriptions by ID; IDs EC2 no longer knows are absent."""
        ...

    def impaired(self) -> dict[str, str]:
        """Running instances whose EC2 status checks fail: ID -> ``instance`` or ``system``."""
        ...

    def pod_tags(self, pod: Mapping[str, Any], node: str) -> dict[str, str]: ...

    def run_instance(self, params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        """Launch one instance, tagged at launch, idempotent by the ClientToken ``token``."""
        ...

    def run_instances(
        self, params: LaunchParams, tags: Mapping[str, str], token: str, count: int
    ) -> list[Instance]:
        """Launch up to ``count`` instances in one call (at least one), in launch-index order."""
        ...

    def subnet_zones(self, subnet_ids: Sequence[str]) -> dict[str, str]:
        """Subnet ID -> Availability Zone; subnets whose zone is unknown are absent."""
        ...

    def create_tags(self, instance_ids: Sequence[str], tags: Mapping[str, str]) -> None: ...

    def console_output(self, instance_id: str) -> str:
        """The instance's console output as text (GetConsoleOutput, newest when EC2 can)."""
        ...

    def describe_instance_types(self, instance_types: Sequence[str]) -> dict[str, dict[str, Any]]:
        """DescribeInstanceTypes by name (``VCpuInfo``, ``MemoryInfo``, ``ProcessorInfo`` ...); a
        type EC2 does not offer fails the call with ``InvalidInstanceType``."""
        ...

    def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        """Terminate instances; the IDs EC2 answered NotFound for (gone long ago, or not visible yet)."""
        ...

    def terminate_soon(self, instance_ids: Sequence[str]) -> list[str] | None:
        """Terminate instances in a call shared with others: None while it is not sent yet (ask
        again later), else the IDs EC2 answered NotFound for."""
        ...

    def allocate_host(self, request: HostRequest, zone: str, token: str) -> str:
        """AllocateHosts of one host in ``zone``, tagged at allocation, idempotent by ``token``."""
        ...

    def cluster_hosts(self) -> list[dict[str, Any]]:
        """DescribeHosts of the cluster's hosts (by tag) that are still allocated."""
        ...

    def release_hosts(self, host_ids: Sequence[str]) -> dict[str, str]:
        """ReleaseHosts; the hosts EC2 did not release: ID -> its code and message."""
        ...


class LaunchTokens(Protocol):
    """The fleet-wide RunInstances budget (:class:`vkec2.ec2.ratelimit.RateLimiter`)."""

    def reserve_launch(self, instances: int) -> float:
        """Reserve one RunInstances and ``instances`` instances: seconds until they exist (-1: too far)."""
        ...

    def try_take(self, action: str) -> bool:
        """Take one token for ``action`` if one exists now; never waits."""
        ...

    def prepaid(self, action: str) -> AbstractContextManager[None]:
        """Around the ``action`` call whose token was taken already: the limiter takes none for it."""
        ...


class Agents(Protocol):
    """The calls the fleet makes to the agent on an instance."""

    def serving(self, target: AgentTarget) -> bool:
        """True when the agent answers grpc.health SERVING."""
        ...

    def launch(self, target: AgentTarget, pod: Mapping[str, Any]) -> None:
        """LaunchApplication; AgentUnavailable to retry later, AgentRejected when refused."""
        ...

    def update_volumes(self, target: AgentTarget, pod: Mapping[str, Any]) -> list[str]:
        """UpdateVolumes with the pod's sealed content: the volumes whose files changed."""
        ...

    def status(self, target: AgentTarget) -> AppStatus:
        """CheckApplicationHealth: the workload's status."""
        ...

    def terminate(self, target: AgentTarget, grace_seconds: int, *, wait: bool = True) -> None:
        """TerminateApplication: answered once the workload is gone, or at once without ``wait``."""
        ...
