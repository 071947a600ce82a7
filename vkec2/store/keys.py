"""The Redis key schema: every key vkec2 writes is named here, and only the store uses these names.

All keys of one cluster share the prefix ``vkec2:{cluster}:`` so several clusters (and tests) can
share one Redis without seeing each other. Pod records are keyed by pod UID, never by
namespace/name, because a name is reused by the next pod of the same name while a UID is not.
Code outside :mod:`vkec2.store` never builds a key: it calls the store's intent-named methods.

Each key, with its type, who writes it (owner), how long it lives and what it holds:

- ``pod:{uid}`` (hash): the pod record (see :mod:`vkec2.domain.models`). Owner: the producer (spec,
  generation, deleted, deletion_grace) and workers (lifecycle fields). Lifetime: until the producer
  forgets the pod.
- ``pods`` (set): UIDs of every pod record of the cluster. Owner: the producer. Lifetime: a UID leaves
  when its pod is forgotten.
- ``node:{node}:pods`` (set): UIDs of the pods bound to one virtual node. Owner: the producer. Lifetime: a
  UID leaves when its pod is forgotten.
- ``nodes`` (set): names of the virtual nodes that registered. Owner: the producer (re-added after each
  full reconcile). Lifetime: until the node is removed (``vkec2 node drain``).
- ``epoch`` (string): JSON ``{id, created}``: a random ID of this Redis's data, written with SET NX by the
  first producer that finds none (a fresh Redis, or one that lost its data: restart without
  persistence, fail-over to an empty replica, FLUSHALL). Owner: the producer's heartbeat. Lifetime:
  permanent (gone only with the data, which is how a loss is detected).
- ``reconciled`` (hash): node -> the epoch ID at which that node's producer last listed its pods and
  rewrote their records. Orphan GC and warm-pool shrinking run only when every node in ``nodes`` is at
  the current epoch. Owner: the producer. Lifetime: an entry goes with its node (``vkec2 node drain``).
- ``removed`` (hash): node -> when ``vkec2 node drain`` removed it: its instances left over are orphan
  candidates (a node merely absent from ``nodes`` may be a producer that has not re-registered since a
  loss). Owner: the drain; a node that registers again leaves it. Lifetime: until the node returns, or
  the data is lost.
- ``lock:{uid}`` (string): the per-pod lock: a random token. Owner: workers (pod tasks, health sweep).
  Lifetime: TTL (``celery.lock_ttl_seconds``, 15 s by default; extended before every side effect and
  every third of the TTL by the holder's heartbeat, for at most ``celery.lock_max_hold_seconds``);
  deleted on release.
- ``due`` (sorted set): UID -> when the pod's next create or delete step should have started (its
  publish time plus its countdown; a resumed step: the next time it may be resumed again). Owner: the
  producer's desired and delete writes add it (in their Lua call), the pod tasks move it with every
  step they schedule and remove it when the chain ends (in the fenced write), the resume task bumps
  it when it publishes a step again. Lifetime: while the pod has a chain in flight; dropped with
  the pod record.
- ``due:task`` (hash): UID -> JSON ``{task, generation, resumes}``: the task of the pod's step in
  ``due`` (create or delete), the generation it was sent for, how often it was resumed. Owner and
  lifetime: those of ``due``, written and removed with it.
- ``outbox:{node}`` (stream): status events for the producer of ``node``. Owner: workers append (in the
  fenced write); the producer consumes it (group ``producer``). Lifetime: the producer trims the
  entries its group settled (every second); capped at about 100,000 entries.
- ``outbox:{node}:dead`` (stream): the status events the producer of ``node`` gave up on (its handler
  failed ``--outbox-max-attempts`` times): the entry's fields plus ``entry`` (its outbox ID), ``error``
  (the last failure's text) and ``attempts``. Owner: the producer appends (with the entry's ack);
  ``vkec2 status`` reads it. Lifetime: capped at about 1,000 entries.
- ``pool:{name}:ready`` (set): IDs of a pool's members that are Ready to be claimed. Owner: the warm-pool
  reconcile; a pod's create step claims from it. Lifetime: rebuilt from EC2 tags every pass.
- ``pool:{name}:instances`` (hash): instance ID -> JSON description of an unclaimed member. Owner: the
  warm-pool reconcile; a claim removes the entry. Lifetime: rebuilt from EC2 tags every pass.
- ``pool:{name}:known`` (hash): instance ID -> when it was put in ``ready`` (a claim vs. a lost mirror).
  Owner: the warm-pool reconcile. Lifetime: an entry is dropped when its instance is gone.
- ``pool:{name}:slots`` (string): launch slots of a pool (one ClientToken per slot). Owner: the warm-pool
  reconcile. Lifetime: permanent counter.
- ``pool:{name}:reconcile`` (string): single-flight lock of one pool's reconcile. Owner: the warm-pool
  reconcile. Lifetime: TTL 120 s; deleted when the pass ends.
- ``hosts:{pool}`` (hash): host ID -> JSON of a Dedicated Host of a host pool as EC2 last described it
  (:class:`vkec2.domain.hosts.HostRecord` without its claims: zone, EC2 state, instances, allocation
  time, scrubbing and idle times). Owner: the hosts pass (``vkec2.maintenance.hosts``) rebuilds it
  from DescribeHosts and the cluster's host tags; a create step's allocation adds the host it
  allocated and marks one that refused a launch. Lifetime: an entry goes when its host is released.
- ``hosts:{pool}:claims`` (hash): host ID -> JSON ``{pod UID: claimed at}``: the pods holding a slot
  on it (taken atomically with the host's choice, so two workers never put two pods on one Mac host).
  Owner: the create step claims; the hosts pass drops the claims of pods whose instance is gone and
  rebuilds them from the instances' pod tags. Lifetime: as its host's entry.
- ``hosts:{pool}:slots`` (string): the host pool's allocation sequence (each allocation's ClientToken
  and ``vkec2.io/host-slot`` tag). Owner: the allocation; raised to the highest tag seen after a loss.
  Lifetime: permanent counter.
- ``hosts:{pool}:intent`` (string): the sequence number of an AllocateHosts in flight; a step that
  stopped after sending it re-sends the same ClientToken (EC2 answers the same host). Owner: the
  allocation. Lifetime: deleted once the host is recorded.
- ``hosts:{pool}:allocate`` (string): single-flight lock of one pool's allocation. Owner: the
  allocation (create step or hosts pass). Lifetime: TTL 60 s; deleted when the allocation ends.
- ``hosts:pass`` (string): single-flight lock of the hosts pass. Owner: the hosts pass. Lifetime: TTL
  120 s; deleted when the pass ends.
- ``hosts:quota`` (hash): instance family -> the account's Dedicated Host quota (Service Quotas
  ``quotas.host_codes``). Owner: the quota refresh. Lifetime: overwritten by every refresh.
- ``health:sweep`` (string): single-flight lock of the health sweep. Owner: the health sweep. Lifetime:
  TTL max(60 s, 3 sweep intervals); deleted when the pass ends.
- ``unavailable:{instance_type}:{zone}`` (string): JSON ``{code, message, at}`` of the capacity error EC2
  answered for that instance type in that Availability Zone (zone ``*``: a quota of the whole region;
  a subnet ID when its zone is unknown). Owner: the create step (:mod:`vkec2.fleet.capacity`); every
  create step reads it before trying the pair. Lifetime: TTL ``ec2.unavailable_ttl_seconds`` (180 s).
- ``quota:exceeded`` (hash): instance type -> JSON answer (``code``, ``message``, ``at``, ``until``) of the
  last quota refusal (``VcpuLimitExceeded`` ...) for the whole region. Owner: the create step (with the
  region-wide ``unavailable`` mark); the producer shows it as the node's ``vkec2.io/QuotaExceeded``
  condition; the quota refresh clears it. Lifetime: entries past ``until`` are ignored and dropped.
- ``capacity`` (hash): node capacity: cpu, memory, pods, source, reason, updated_at. Owner: the quota
  refresh; the producer reads it. Lifetime: overwritten by every refresh.
- ``ec2:calls`` (hash): EC2 API action -> calls made by the fleet. Owner: the EC2 gateway (every worker).
  Lifetime: permanent counters.
- ``ec2:throttles`` (hash): EC2 API action -> throttled calls. Owner: the EC2 gateway (every worker).
  Lifetime: permanent counters.
- ``ec2:throttled_attempts`` (hash): EC2 API action -> HTTP attempts throttled (botocore's retries too).
  Owner: the rate limiter's botocore hook. Lifetime: permanent counters.
- ``ec2:seen:{instance_id}`` (string): JSON ``{"at": epoch seconds, "instance": description or null}``: the
  last DescribeInstances answer for one instance (the fields the fleet reads of it,
  :func:`vkec2.domain.instances.slim`), shared by every worker that polls it. Owner: the
  batching gateway. Lifetime: TTL 300 s.
- ``ec2:batch:{kind}:wanted`` (sorted set for ``describe``, set for ``terminate``): instance IDs waiting
  for the next coalesced DescribeInstances / TerminateInstances. Owner: the batching gateway. Lifetime:
  until a batch takes them.
- ``ec2:batch:{kind}:lead`` (string): the lock of the one worker gathering and sending the next batch
  of ``kind``. Owner: the batching gateway. Lifetime: TTL (window + one call's worst case).
- ``ec2:terminated:{instance_id}`` (string): JSON ``{"at": epoch seconds, "found": bool}``: when a coalesced
  TerminateInstances named the instance, and whether EC2 knew it (False: NotFound).
  Owner: the batching gateway. Lifetime: TTL 3,600 s.
- ``ratelimit:{class}`` (hash): token bucket of one EC2 API class: tokens, ts. Owner: the rate limiter
  (every EC2 call). Lifetime: expires when idle (burst / rate + max wait + 60 s).
- ``gc:sightings`` (hash): instance ID -> JSON {first, last, count}: consecutive passes as an orphan.
  Owner: orphan GC. Lifetime: replaced by every pass.
- ``gc:pass`` (string): number of the last GC pass. Owner: orphan GC. Lifetime: permanent counter.
- ``gc:lock`` (string): single-flight lock of a GC pass. Owner: orphan GC. Lifetime: TTL 300 s; deleted
  when the pass ends.
- ``gc:stats`` (hash): terminated / would_terminate / passes. Owner: orphan GC. Lifetime: permanent
  counters.
- ``health:breaker`` (string): JSON of the health sweep's remediation circuit breaker
  (:class:`vkec2.domain.breaker.BreakerState`: open, failure class, scope, share, since, worker,
  message, the tallies of the last ``health.breaker_window_passes`` passes, the times of the
  agent-caused replacements of the last interval). Owner: the health sweep (written every pass that
  checked agents); the producer (node condition ``vkec2.io/RemediationPaused``), ``vkec2 status``
  and the metrics read it. Lifetime: permanent, overwritten by every pass.
- ``beat:`` (prefix): RedBeat's schedule entries and its lock (``beat::lock``). Owner: RedBeat (beat).
  Lifetime: one entry per schedule entry; the lock expires after ``beat.lock_timeout_seconds``. The
  store reads the lock's presence for beat liveness (:mod:`vkec2.domain.beat`).
- ``maintenance:runs:{task}`` (list): recent run times of a periodic task (newest first). Owner: the
  periodic tasks. Lifetime: capped at the newest 100.
- ``maintenance:last:{task}`` (hash): the last finished run of a periodic task: ``ts``, ``result`` (JSON).
  Owner: the periodic tasks. Lifetime: overwritten by every run.
- ``status:last`` (hash): the last status line (``line``) and the counters it was computed from. Owner:
  the status log. Lifetime: overwritten by every line.

Not ours: kombu (the Celery broker) writes under ``celery:``, its ``global_keyprefix``, so two
clusters on one Redis share no queue, binding, unacknowledged message, control or event channel
(docs/redis.md). Owner: kombu; the status log reads the queue lengths, the resume task the publish
time of the oldest message of the ``pods`` list.

- ``celery:{queue}`` and ``celery:{queue}\x06\x16{3,6,9}`` (lists): the ready messages of ``pods``,
  ``health``, ``maintenance`` and their priorities; reply queues ``celery:{uuid}.reply.celery.pidbox``
  of control commands. Lifetime: until consumed (reply queues expire).
- ``celery:_kombu.binding.{exchange}`` (sets): which queues an exchange routes to, ``celery.pidbox``
  and ``reply.celery.pidbox`` included. Lifetime: permanent (rewritten at every start).
- ``celery:unacked`` (hash), ``celery:unacked_index`` (sorted set), ``celery:unacked_mutex`` (string):
  delivered, unacknowledged messages, restored after ``celery.visibility_timeout_seconds``.
- pub/sub channels (no keys): ``celery:/{db}.celery.pidbox`` (control: ping, inspect) and
  ``celery:/{db}.celeryev/...`` (task events, Flower).
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

    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    def reconciled(self) -> str:
        return f"{self.prefix}reconciled"

    def removed(self) -> str:
        return f"{self.prefix}removed"

    def lock(self, uid: str) -> str:
        return f"{self.prefix}lock:{uid}"

    def due(self) -> str:
        return f"{self.prefix}due"

    def due_task(self) -> str:
        return f"{self.prefix}due:task"

    def outbox(self, node: str) -> str:
        return f"{self.prefix}outbox:{node}"

    def outbox_dead(self, node: str) -> str:
        return f"{self.prefix}outbox:{node}:dead"

    def pool_ready(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:ready"

    def pool_instances(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}:instances"

    def unavailable(self, instance_type: str, zone: str) -> str:
        return f"{self.prefix}unavailable:{instance_type}:{zone}"

    def quota_exceeded(self) -> str:
        return f"{self.prefix}quota:exceeded"

    def capacity(self) -> str:
        return f"{self.prefix}capacity"

    def ec2_calls(self) -> str:
        return f"{self.prefix}ec2:calls"

    def ec2_throttles(self) -> str:
        return f"{self.prefix}ec2:throttles"

    def ec2_seen(self, instance_id: str) -> str:
        return f"{self.prefix}ec2:seen:{instance_id}"

    def ec2_batch_wanted(self, kind: str) -> str:
        return f"{self.prefix}ec2:batch:{kind}:wanted"

    def ec2_batch_lead(self, kind: str) -> str:
        return f"{self.prefix}ec2:batch:{kind}:lead"

    def ec2_terminated(self, instance_id: str) -> str:
        return f"{self.prefix}ec2:terminated:{instance_id}"

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

    def health_breaker(self) -> str:
        return f"{self.prefix}health:breaker"

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

    def beat_lock(self) -> str:
        """RedBeat's lock: its key prefix followed by ``:lock`` (redbeat's ``redbeat_lock_key`` default)."""
        return f"{self.beat_prefix()}:lock"

    def celery_prefix(self) -> str:
        return f"{self.prefix}celery:"

    def maintenance_runs(self, task: str) -> str:
        return f"{self.prefix}maintenance:runs:{task}"

    def maintenance_last(self, task: str) -> str:
        return f"{self.prefix}maintenance:last:{task}"

    def status_last(self) -> str:
        return f"{self.prefix}status:last"

    # -- batched launches (vkec2.store.launches) ---------------------------------------------------

    def launch_open(self, params_key: str) -> str:
        return f"{self.prefix}launch:open:{params_key}"

    def launch_batch(self, batch_id: str) -> str:
        return f"{self.prefix}launch:b:{batch_id}"

    def launch_member(self, uid: str) -> str:
        return f"{self.prefix}launch:of:{uid}"

    def launch_untagged(self) -> str:
        return f"{self.prefix}launch:untagged"

    # -- Dedicated hosts (vkec2.store.hosts) ------------------------------------------------------

    def hosts(self, pool: str) -> str:
        return f"{self.prefix}hosts:{pool}"

    def host_claims(self, pool: str) -> str:
        return f"{self.prefix}hosts:{pool}:claims"

    def host_slots(self, pool: str) -> str:
        return f"{self.prefix}hosts:{pool}:slots"

    def host_intent(self, pool: str) -> str:
        return f"{self.prefix}hosts:{pool}:intent"

    def host_allocate_lock(self, pool: str) -> str:
        return f"{self.prefix}hosts:{pool}:allocate"

    def hosts_pass_lock(self) -> str:
        return f"{self.prefix}hosts:pass"

    def host_quota(self) -> str:
        return f"{self.prefix}hosts:quota"


def redbeat_key_prefix(cluster: str) -> str:
    """The prefix of RedBeat's keys for ``cluster`` (the broker's configuration passes it to RedBeat)."""
    return Keys(cluster).beat_prefix()


def celery_key_prefix(cluster: str) -> str:
    """The prefix kombu puts before every key and channel of ``cluster``'s broker (``global_keyprefix``)."""
    return Keys(cluster).celery_prefix()
