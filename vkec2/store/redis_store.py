"""The Redis state store: pod records, per-pod locks with fencing, warm-pool claims, status outbox.

Every write a worker makes to a pod record is a compare-and-set in Lua that refuses a stale
fencing token: taking a pod's lock increments the record's ``fence`` and returns it, and a later
write carrying an older fence (a task whose lock expired while it was stuck in a slow call) is
refused with :class:`~vkec2.errors.StaleFence`. The same script appends the status event to the
node's outbox stream, so the record and what the producer is told never disagree. The producer's
writes (desired spec, delete requests) touch only the fields it owns and bump ``generation``.
Key names come from :mod:`vkec2.store.keys`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import redis

from vkec2.domain.models import PodRecord, StatusEvent, now
from vkec2.errors import LockBusy, StaleFence, UnknownPod, Vkec2Error
from vkec2.store.keys import Keys

OUTBOX_MAXLEN = 100_000
LOCK_TTL_MS = 60_000

# KEYS: lock, pod.  ARGV: token, ttl_ms.  -> fence, 0 when busy, -1 when the pod is unknown.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return redis.call('HINCRBY', KEYS[2], 'fence', 1)
"""

# KEYS: lock.  ARGV: token.  -> 1 when released.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock.  ARGV: token, ttl_ms.  -> 1 when extended.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: pod, outbox.  ARGV: fence, nfields, field, value, ..., then event field, value pairs.
# -> 1 when written, 0 when the fence is stale, -1 when the pod is unknown.
_CAS_WRITE = """
local current = redis.call('HGET', KEYS[1], 'fence')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
local i = 3
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
if #ARGV >= i then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[#ARGV], '*', unpack(ARGV, i, #ARGV - 1))
end
return 1
"""

# KEYS: pod, pods, node_pods, nodes.  ARGV: uid, namespace, name, node, spec, now.  -> generation.
# A record that was deleted and is desired again (same UID) starts a fresh lifecycle: once its phase
# is final (vkec2.domain.phases.FINAL_PHASES) it drops exactly vkec2.domain.phases.LIFE_FIELDS.
_PUT_DESIRED = """
local exists = redis.call('EXISTS', KEYS[1])
if exists == 1 and redis.call('HGET', KEYS[1], 'deleted') == '1' then
  local phase = redis.call('HGET', KEYS[1], 'phase')
  if phase == 'Terminated' or phase == 'Failed' or phase == 'Succeeded' then
    redis.call('HDEL', KEYS[1], 'instance', 'instance_id', 'endpoint', 'launched_at', 'next_task',
               'reason', 'message', 'conditions', 'container_statuses', 'health')
    redis.call('HSET', KEYS[1], 'phase', 'Pending', 'attempt', '0', 'deleted', '0', 'created_at', ARGV[6])
  else
    return -1
  end
end
if exists == 0 then
  redis.call('HSET', KEYS[1], 'phase', 'Pending', 'attempt', '0', 'fence', '0', 'deleted', '0',
             'created_at', ARGV[6])
end
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'namespace', ARGV[2], 'name', ARGV[3], 'node', ARGV[4],
           'spec', ARGV[5], 'updated_at', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
return redis.call('HINCRBY', KEYS[1], 'generation', 1)
"""

# KEYS: pod.  ARGV: now.  -> new generation, or -1 when the pod is unknown.
_MARK_DELETED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'deleted', '1', 'updated_at', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'generation', 1)
"""

# KEYS: pool ready set, pool instances hash.  -> {instance_id, instance JSON} or nil when empty.
_CLAIM = """
local id = redis.call('SPOP', KEYS[1])
if not id then return nil end
local doc = redis.call('HGET', KEYS[2], id) or '{}'
redis.call('HDEL', KEYS[2], id)
return {id, doc}
"""

# KEYS: pod, pods, node_pods, lock.
_FORGET = """
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


class Store:
    """Typed access to one cluster's state in Redis."""

    def __init__(self, client: redis.Redis, cluster: str) -> None:
        self.redis = client
        self.keys = Keys(cluster)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)
        self._cas = client.register_script(_CAS_WRITE)
        self._put = client.register_script(_PUT_DESIRED)
        self._mark_deleted = client.register_script(_MARK_DELETED)
        self._forget = client.register_script(_FORGET)
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def from_url(cls, url: str, cluster: str) -> Store:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
        )
        return cls(client, cluster)

    # -- producer side -------------------------------------------------------------------

    def put_desired(self, pod: Mapping[str, Any], node: str) -> int:
        """Record a pod's desired spec; returns its new generation.

        Raises :class:`Vkec2Error` when the UID is being deleted and cannot be desired again yet.
        """
        meta = pod.get("metadata", {})
        uid = str(meta["uid"])
        generation = int(
            self._put(
                keys=[self.keys.pod(uid), self.keys.pods(), self.keys.node_pods(node), self.keys.nodes()],
                args=[
                    uid,
                    meta.get("namespace", "default"),
                    meta.get("name", ""),
                    node,
                    json.dumps(pod, sort_keys=True, default=str),
                    repr(now()),
                ],
            )
        )
        if generation < 0:
            raise Vkec2Error(f"pod {uid} is still being deleted", reason="PodTerminating")
        return generation

    def mark_deleted(self, uid: str) -> int | None:
        """Record that the pod should no longer exist; returns the new generation (None if unknown)."""
        generation = int(self._mark_deleted(keys=[self.keys.pod(uid)], args=[repr(now())]))
        return None if generation < 0 else generation

    def forget(self, uid: str) -> None:
        """Drop a pod record for good (after the producer removed the pod object)."""
        record = self.get(uid)
        node = record.node if record else ""
        self._forget(
            keys=[self.keys.pod(uid), self.keys.pods(), self.keys.node_pods(node), self.keys.lock(uid)],
            args=[uid],
        )

    # -- reading -------------------------------------------------------------------------

    def get(self, uid: str) -> PodRecord | None:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.pod(uid)))
        if not raw or "uid" not in raw:
            return None
        return PodRecord.from_hash(raw)

    def uids(self, node: str | None = None) -> set[str]:
        key = self.keys.pods() if node is None else self.keys.node_pods(node)
        return cast(set[str], self.redis.smembers(key))

    def records(self, node: str | None = None) -> list[PodRecord]:
        uids = sorted(self.uids(node))
        pipe = self.redis.pipeline(transaction=False)
        for uid in uids:
            pipe.hgetall(self.keys.pod(uid))
        out = []
        for raw in pipe.execute():
            if raw and "uid" in raw:
                out.append(PodRecord.from_hash(raw))
        return out

    def nodes(self) -> set[str]:
        return cast(set[str], self.redis.smembers(self.keys.nodes()))

    # -- locking and fenced writes ------------------------------------------------------

    @contextmanager
    def locked(self, uid: str, ttl_ms: int = LOCK_TTL_MS) -> Iterator[Lock]:
        """Hold the pod's lock for the block; raises LockBusy if another task holds it."""
        token = secrets.token_hex(16)
        fence = int(self._acquire(keys=[self.keys.lock(uid), self.keys.pod(uid)], args=[token, ttl_ms]))
        if fence == -1:
            raise UnknownPod(f"no pod record for uid {uid}")
        if fence == 0:
            raise LockBusy(f"pod {uid} is locked by another task")
        lock = Lock(self, uid, token, fence, ttl_ms)
        try:
            yield lock
        finally:
            self._release(keys=[self.keys.lock(uid)], args=[token])

    @contextmanager
    def single_flight(self, key: str, ttl_ms: int) -> Iterator[bool]:
        """Hold the run lock ``key`` for the block if nobody else does; yields whether it is held.

        For cluster-wide passes (health sweep, GC, a pool's reconcile) that a duplicated or
        overlapping delivery must not run twice at once.
        """
        token = secrets.token_hex(16)
        if not self.redis.set(key, token, nx=True, px=ttl_ms):
            yield False
            return
        try:
            yield True
        finally:
            self._release(keys=[key], args=[token])

    def write(
        self,
        uid: str,
        fence: int,
        values: Mapping[str, Any],
        event: StatusEvent | None = None,
        node: str = "",
    ) -> None:
        """Compare-and-set pod fields under ``fence``, appending ``event`` to the outbox atomically."""
        encoded = PodRecord.encode({**values, "updated_at": now()})
        args: list[str] = [str(fence), str(len(encoded))]
        for key, value in encoded.items():
            args += [key, value]
        if event is not None:
            for key, value in event.to_fields().items():
                args += [key, value]
            args.append(str(OUTBOX_MAXLEN))
        result = int(self._cas(keys=[self.keys.pod(uid), self.keys.outbox(node or "-")], args=args))
        if result == 0:
            raise StaleFence(f"pod {uid}: fence {fence} is stale; another task owns the pod")
        if result == -1:
            raise UnknownPod(f"no pod record for uid {uid}")

    # -- warm pools -----------------------------------------------------------------------

    def claim_ready(self, pool: str) -> tuple[str, dict[str, Any]] | None:
        """Atomically take one Ready instance out of a warm pool: its ID and description, or None."""
        found = self._claim(keys=[self.keys.pool_ready(pool), self.keys.pool_instances(pool)])
        if not found:
            return None
        instance = json.loads(found[1])
        instance.setdefault("InstanceId", found[0])
        return str(found[0]), instance

    # -- status outbox --------------------------------------------------------------------

    def outbox_events(
        self, node: str, after: str = "0-0", count: int = 1000
    ) -> list[tuple[str, StatusEvent]]:
        """Read outbox entries after an ID (for tests and the CLI; the producer uses a group)."""
        entries = cast(
            list[tuple[str, dict[str, str]]],
            self.redis.xrange(self.keys.outbox(node), min=f"({after}", count=count),
        )
        return [(entry_id, StatusEvent.from_fields(raw)) for entry_id, raw in entries]

    # -- EC2 call accounting ------------------------------------------------------------

    def count_ec2_call(self, action: str, throttled: bool = False) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.ec2_calls(), action, 1)
        if throttled:
            pipe.hincrby(self.keys.ec2_throttles(), action, 1)
        pipe.execute()

    def ec2_calls(self) -> dict[str, int]:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.ec2_calls()))
        return {k: int(v) for k, v in raw.items()}


class Lock:
    """A held pod lock: its fence for compare-and-set writes, and a way to extend it."""

    def __init__(self, store: Store, uid: str, token: str, fence: int, ttl_ms: int) -> None:
        self.store, self.uid, self.token, self.fence, self.ttl_ms = store, uid, token, fence, ttl_ms

    def extend(self, ttl_ms: int | None = None) -> bool:
        """Push the lock's expiry out by ``ttl_ms`` (default: its TTL); False if it was lost meanwhile."""
        ttl = ttl_ms or self.ttl_ms
        return bool(self.store._extend(keys=[self.store.keys.lock(self.uid)], args=[self.token, ttl]))

    def write(self, values: Mapping[str, Any], event: StatusEvent | None = None, node: str = "") -> None:
        self.store.write(self.uid, self.fence, values, event, node)
