"""The Redis key schema: every key vkec2 writes is named here and nowhere else.

All keys of one cluster share the prefix ``vkec2:{cluster}:`` so several clusters (and tests) can
share one Redis without seeing each other. Pod records are keyed by pod UID, never by
namespace/name, because a name is reused by the next pod of the same name while a UID is not.

| key | type | holds |
|---|---|---|
| ``pod:{uid}`` | hash | the pod record (see :mod:`vkec2.domain.models`) |
| ``pods`` | set | UIDs of every pod record of the cluster |
| ``node:{node}:pods`` | set | UIDs of the pods bound to one virtual node |
| ``nodes`` | set | names of the virtual nodes that registered |
| ``lock:{uid}`` | string | the per-pod lock: a random token with a TTL |
| ``outbox:{node}`` | stream | status events for the producer of ``node`` |
| ``pool:{name}:ready`` | set | instance IDs of a warm pool that are Ready to be claimed |
| ``pool:{name}:instances`` | hash | instance ID -> JSON of the pool instance (state, launched) |
| ``capacity`` | hash | node capacity derived from Service Quotas: cpu, memory, pods, source, reason |
| ``ec2:calls`` | hash | EC2 API action -> number of calls made by the fleet |
| ``ec2:throttles`` | hash | EC2 API action -> number of throttled calls |
| ``ec2:throttled_attempts`` | hash | EC2 API action -> HTTP attempts throttled (botocore retries too) |
| ``pool:{name}:known`` | hash | instance ID -> when it was put in ``ready`` (a claim vs. a lost mirror) |
| ``pool:{name}:slots`` | string | counter of warm-pool launch slots (one ClientToken per slot) |
| ``pool:{name}:reconcile`` | string | single-flight lock of one pool's reconcile |
| ``health:sweep`` | string | single-flight lock of the health sweep |
| ``gc:sightings`` | hash | instance ID -> JSON {first, last, count}: consecutive passes as an orphan |
| ``gc:pass`` | string | number of the last GC pass |
| ``gc:lock`` | string | single-flight lock of a GC pass |
| ``gc:stats`` | hash | terminated / would_terminate / passes counters |
| ``ratelimit:{class}`` | hash | token bucket of one EC2 API class: tokens, ts |
| ``beat:`` | prefix | RedBeat's schedule entries and its lock (``beat::lock``) |
| ``maintenance:runs:{task}`` | list | recent run times of a periodic task (newest first, capped) |
| ``maintenance:last:{task}`` | hash | the last finished run of a periodic task: ``ts``, ``result`` (JSON) |
| ``status:last`` | hash | the last status line (``line``) and the counters it was computed from |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names for one cluster."""

    cluster: str

    @property
    def prefix(self) -> str:
        return f"vkec2:{self.cluster}:"

    def pod(self, uid: str) -> str:
        return f"{self.prefix}pod:{uid}"

    def pods(self) -> str:
        return f"{self.prefix}pods"

    def node_pods(self, node: str) -> str:
        return f"{self.prefix}node:{node}:pods"

    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def lock(self, uid: str) -> str:
        return f"{self.prefix}lock:{uid}"

    def outbox(self, node: str) -> str:
        return f"{self.prefix}outbox:{node}"

    def pool_ready(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:ready"

    def pool_instances(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:instances"

    def capacity(self) -> str:
        return f"{self.prefix}capacity"

    def ec2_calls(self) -> str:
        return f"{self.prefix}ec2:calls"

    def ec2_throttles(self) -> str:
        return f"{self.prefix}ec2:throttles"

    # -- fleet maintenance (vkec2.domain.health, warmpool, gc, ratelimit, statuslog; tasks.maintenance) --

    def ec2_throttled_attempts(self) -> str:
        return f"{self.prefix}ec2:throttled_attempts"

    def pool_known(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:known"

    def pool_slots(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:slots"

    def pool_reconcile_lock(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:reconcile"

    def health_sweep_lock(self) -> str:
        return f"{self.prefix}health:sweep"

    def gc_sightings(self) -> str:
        return f"{self.prefix}gc:sightings"

    def gc_pass(self) -> str:
        return f"{self.prefix}gc:pass"

    def gc_lock(self) -> str:
        return f"{self.prefix}gc:lock"

    def gc_stats(self) -> str:
        return f"{self.prefix}gc:stats"

    def ratelimit(self, api_class: str) -> str:
        return f"{self.prefix}ratelimit:{api_class}"

    def beat_prefix(self) -> str:
        return f"{self.prefix}beat:"

    def maintenance_runs(self, task: str) -> str:
        return f"{self.prefix}maintenance:runs:{task}"

    def maintenance_last(self, task: str) -> str:
        return f"{self.prefix}maintenance:last:{task}"

    def status_last(self) -> str:
        return f"{self.prefix}status:last"
