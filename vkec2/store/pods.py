"""Pod records in Redis: the producer's desired state, per-pod locks with fencing, fenced writes.

Every write a worker makes to a pod record is a compare-and-set in Lua that refuses a stale
fencing token: taking a pod's lock increments the record's ``fence`` and returns it, and a later
write carrying an older fence (a task whose lock expired while it was stuck in a slow call) is
refused with :class:`~vkec2.errors.StaleFence`. The same script appends the status event to the
node's outbox stream, so the record and what the producer is told never disagree. Before each side
effect (a warm-pool claim, CreateTags, RunInstances, TerminateInstances) the holder runs a guard
that extends its lock only while its token and fence still hold (:meth:`Lock.guard`), so a task
stalled past its lock never acts on a pod another task took over. The producer's writes (desired
spec, delete requests) touch only the fields it owns and bump ``generation``; both make the pod due
a step now (``due``, see :mod:`vkec2.store.due`), and a chain's fenced writes move or clear it. With
``redis_wait_replicas`` a fenced write waits (Redis ``WAIT``) until that many replicas have it, so
a Sentinel fail-over right after it cannot take it back (docs/redis.md). A pod task's step takes
a :class:`StepLock` (:meth:`PodRecords.step_locked`): the lock and the record in one call, its
writes sent with its next guard or, with its next step's due time and the release, at its end,
so a polling step costs two round trips.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import Any, cast

from redis.commands.core import Script

from vkec2 import contract
from vkec2.domain import phases
from vkec2.domain.models import DueStep, PodRecord, StatusEvent, now
from vkec2.errors import LockBusy, StaleFence, UnknownPod, Vkec2Error
from vkec2.store.base import WAIT_TIMEOUT_MS, NotReplicated, StoreBase
from vkec2.store.heartbeat import LockHeartbeat

OUTBOX_MAXLEN = 100_000
LOCK_TTL_MS = 60_000


def _check_taken(uid: str, fence: int) -> None:
    """Raise what a failed lock acquisition means: no record (-1), or held by another task (0)."""
    if fence == -1:
        raise UnknownPod(f"no pod record for uid {uid}")
    if fence == 0:
        raise LockBusy(f"pod {uid} is locked by another task")


class PodRecords(StoreBase):
    """Pod records, the sets that index them, their locks and fenced writes."""

    # -- producer side -------------------------------------------------------------------

    def put_desired(self, pod: Mapping[str, Any], node: str, *, rebuilt: bool = False) -> int:
        """Record a pod's desired spec; returns its new generation.

        ``rebuilt``: the producer re-creates the record of a pod it listed, after Redis may have lost
        it; a record that did not exist is then flagged so its create step first looks for every
        instance the pod ever had (row C27) instead of trusting attempt 0.

        Raises :class:`Vkec2Error` when the UID is being deleted and cannot be desired again yet.
        """
        meta = pod.get("metadata", {})
        uid = str(meta["uid"])
        generation = int(
            self.scripts.put_desired(
                keys=[
                    self.keys.pod(uid),
                    self.keys.pods(),
                    self.keys.node_pods(node),
                    self.keys.nodes(),
                    self.keys.due(),
                    self.keys.due_task(),
                ],
                args=[
                    uid,
                    meta.get("namespace", "default"),
                    meta.get("name", ""),
                    node,
                    json.dumps(pod, sort_keys=True, default=str),
                    repr(now()),
                    contract.POD_CREATE,
                    "1" if rebuilt else "0",
                    str(len(phases.FINAL_PHASES)),
                    *sorted(phases.FINAL_PHASES),
                    *phases.LIFE_FIELDS,
                ],
            )
        )
        if generation < 0:
            raise Vkec2Error(f"pod {uid} is still being deleted", reason="PodTerminating")
        return generation

    def mark_deleted(self, uid: str, grace_seconds: float | None = None) -> int | None:
        """Record that the pod should no longer exist; returns the new generation (None if unknown).

        ``grace_seconds`` is the delete's own grace period (the pod object's
        ``deletionGracePeriodSeconds``), kept in the record as ``deletion_grace`` for the workers.
        """
        grace = "" if grace_seconds is None else repr(float(grace_seconds))
        generation = int(
            self.scripts.mark_deleted(
                keys=[self.keys.pod(uid), self.keys.due(), self.keys.due_task()],
                args=[repr(now()), grace, contract.POD_DELETE, uid],
            )
        )
        return None if generation < 0 else generation

    def forget(self, uid: str) -> None:
        """Drop a pod record for good (after the producer removed the pod object)."""
        record = self.get(uid)
        node = record.node if record else ""
        self.scripts.forget(
            keys=[
                self.keys.pod(uid),
                self.keys.pods(),
                self.keys.node_pods(node),
                self.keys.lock(uid),
                self.keys.due(),
                self.keys.due_task(),
            ],
            args=[uid],
        )

    # -- reading -------------------------------------------------------------------------

    def get(self, uid: str) -> PodRecord | None:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.pod(uid)))
        if not raw or "uid" not in raw:
            return None
        return PodRecord.from_hash(raw)

    def pod_fields(self, uid: str, *fields: str) -> dict[str, str]:
        """Some raw fields of a pod record (``""`` for a missing one), without decoding the record."""
        values = cast(list[Any], self.redis.hmget(self.keys.pod(uid), list(fields)))
        text = [v.decode() if isinstance(v, bytes) else str(v or "") for v in values]
        return dict(zip(fields, text, strict=True))

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

    @cached_property
    def lock_heartbeat(self) -> LockHeartbeat:
        """The keep-alive thread of the locks this process holds (started on first use)."""
        return LockHeartbeat(self.extend_lock)

    @contextmanager
    def locked(
        self, uid: str, ttl_ms: int = LOCK_TTL_MS, *, max_hold_s: float | None = None
    ) -> Iterator[Lock]:
        """Hold the pod's lock for the block; raises LockBusy if another task holds it.

        With ``max_hold_s`` the lock is kept alive while the block runs, for at most that long
        (:mod:`vkec2.store.heartbeat`); without it the lock lives ``ttl_ms`` unless extended.
        """
        token = secrets.token_hex(16)
        fence = int(
            self.scripts.acquire(keys=[self.keys.lock(uid), self.keys.pod(uid)], args=[token, ttl_ms])
        )
        _check_taken(uid, fence)
        lock = Lock(self, uid, token, fence, ttl_ms)
        if max_hold_s is not None:
            self.lock_heartbeat.hold(uid, token, ttl_ms, max_hold_s)
        try:
            yield lock
        finally:
            if max_hold_s is not None:
                self.lock_heartbeat.drop(token)
            self.scripts.release(keys=[self.keys.lock(uid)], args=[token])

    @contextmanager
    def step_locked(
        self, uid: str, ttl_ms: int = LOCK_TTL_MS, *, max_hold_s: float | None = None
    ) -> Iterator[StepLock]:
        """Like :meth:`locked`, for one task step: the lock comes with the fresh record
        (:attr:`StepLock.record`, in the same round trip) and its writes are deferred (see
        :class:`StepLock`); the step's last writes, its next step and the release go in one call.
        """
        token = secrets.token_hex(16)
        reply = cast(
            list[Any],
            self.scripts.acquire_read(keys=[self.keys.lock(uid), self.keys.pod(uid)], args=[token, ttl_ms]),
        )
        fence = int(reply[0])
        _check_taken(uid, fence)
        raw = dict(zip(reply[1::2], reply[2::2], strict=True))
        lock = StepLock(self, uid, token, fence, ttl_ms, PodRecord.from_hash(raw) if "uid" in raw else None)
        if max_hold_s is not None:
            self.lock_heartbeat.hold(uid, token, ttl_ms, max_hold_s)
        try:
            yield lock
        finally:
            if max_hold_s is not None:
                self.lock_heartbeat.drop(token)
            lock.close()

    def extend_lock(self, uid: str, token: str, ttl_ms: int) -> bool:
        """Push out the expiry of the pod lock held with ``token``; False if it was lost meanwhile."""
        return bool(self.scripts.extend(keys=[self.keys.lock(uid)], args=[token, ttl_ms]))

    def guard_lock(self, uid: str, token: str, fence: int, ttl_ms: int) -> None:
        """Extend the pod lock held with ``token`` only if ``fence`` is still the record's; else StaleFence.

        One Lua call, made immediately before a side effect, so a holder whose lock expired while
        it waited (and whose pod another task took over) never acts on the pod again.
        """
        if not int(
            self.scripts.guard(keys=[self.keys.lock(uid), self.keys.pod(uid)], args=[token, fence, ttl_ms])
        ):
            raise StaleFence(f"pod {uid}: lock or fence {fence} lost; another task owns the pod")

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
        keys = [self.keys.pod(uid), self.keys.outbox(node or "-")]
        _check_fenced(uid, fence, self._replicated(self.scripts.cas_write, keys, args))

    def schedule_next(self, uid: str, fence: int, next_task: str, step: DueStep, due_at: float) -> None:
        """Name the chain's next step in the record (``next_task``) and make it due at ``due_at``, fenced."""
        encoded = PodRecord.encode({"next_task": next_task, "updated_at": now()})
        args = [str(fence), uid, repr(due_at), step.to_json()]
        for key, value in encoded.items():
            args += [key, value]
        keys = [self.keys.pod(uid), self.keys.due(), self.keys.due_task()]
        _check_fenced(uid, fence, self._replicated(self.scripts.schedule_next, keys, args))

    def finish_chain(self, uid: str, fence: int, task: str) -> bool:
        """The chain of ``task`` ended: nothing is due (unless another task's step is); False if not due."""
        keys = [self.keys.pod(uid), self.keys.due(), self.keys.due_task()]
        return bool(int(self.scripts.finish_chain(keys=keys, args=[str(fence), uid, task])))

    def step_end(
        self,
        lock: StepLock,
        mode: str,
        fields: Mapping[str, str],
        events: list[list[str]],
        node: str,
        *,
        when: float = 0.0,
        step: DueStep | None = None,
        task: str = "",
    ) -> tuple[int, bool]:
        """Run :data:`~vkec2.store.scripts.STEP_END` for ``lock``: (written, due step cleared)."""
        uid = lock.uid
        at = str(int(when)) if mode == "guard" else repr(when)  # guard: PEXPIRE takes whole ms
        args = [lock.token, str(lock.fence), uid, mode, at, step.to_json() if step else "", task]
        args.append(str(len(fields)))
        for key, value in fields.items():
            args += [key, value]
        args.append(str(len(events)))
        for pairs in events:
            args += [str(len(pairs) // 2), *pairs]
        args.append(str(OUTBOX_MAXLEN))
        keys = [
            self.keys.pod(uid),
            self.keys.outbox(node or "-"),
            self.keys.due(),
            self.keys.due_task(),
            self.keys.lock(uid),
        ]
        reply = cast(list[Any], self._replicated(self.scripts.step_end, keys, args, first=True))
        return int(reply[0]), bool(int(reply[1]))

    def _replicated(self, script: Script, keys: list[str], args: list[str], *, first: bool = False) -> Any:
        """Run a fenced write script; with ``redis_wait_replicas``, wait until that many replicas have it.

        The script answers whether it wrote (1), or with ``first`` a list whose first item says so
        (returned whole).

        Fewer acknowledgements within :data:`WAIT_TIMEOUT_MS` raise :class:`NotReplicated` (a
        :data:`StoreError`): the write may vanish in a fail-over (the old master took it after its
        replica was promoted), so the step must not build on it; it is retried from what the master
        then holds.
        """
        if not self.wait_replicas:
            result = script(keys=keys, args=args)
            return result if first else int(result)
        pipe = self.redis.pipeline(transaction=False)  # WAIT covers the writes of its own connection
        script(keys=keys, args=args, client=pipe)
        pipe.wait(self.wait_replicas, WAIT_TIMEOUT_MS)
        result, acked = pipe.execute()
        written = int(result[0] if first else result)
        if written == 1 and int(acked) < self.wait_replicas:
            raise NotReplicated(
                f"{keys[0]}: the write reached {acked} of {self.wait_replicas} replicas within "
                f"{WAIT_TIMEOUT_MS} ms (redis_wait_replicas); a fail-over could lose it"
            )
        return result if first else written


def _check_fenced(uid: str, fence: int, result: int) -> None:
    if result == 0:
        raise StaleFence(f"pod {uid}: fence {fence} is stale; another task owns the pod")
    if result == -1:
        raise UnknownPod(f"no pod record for uid {uid}")


class Lock:
    """A held pod lock: its fence for compare-and-set writes, and a way to extend it."""

    def __init__(self, store: PodRecords, uid: str, token: str, fence: int, ttl_ms: int) -> None:
        self.store, self.uid, self.token, self.fence, self.ttl_ms = store, uid, token, fence, ttl_ms

    def extend(self, ttl_ms: int | None = None) -> bool:
        """Push the lock's expiry out by ``ttl_ms`` (default: its TTL); False if it was lost meanwhile."""
        return self.store.extend_lock(self.uid, self.token, ttl_ms or self.ttl_ms)

    def guard(self) -> None:
        """Before a side effect: extend the lock by its TTL if it and its fence hold, else StaleFence."""
        self.store.guard_lock(self.uid, self.token, self.fence, self.ttl_ms)

    def write(self, values: Mapping[str, Any], event: StatusEvent | None = None, node: str = "") -> None:
        self.store.write(self.uid, self.fence, values, event, node)

    def schedule_next(self, next_task: str, step: DueStep, due_at: float) -> None:
        """Name the chain's next step in the record and make it due at ``due_at`` (a fenced write)."""
        self.store.schedule_next(self.uid, self.fence, next_task, step, due_at)

    def finish_chain(self, task: str) -> bool:
        """The chain of ``task`` ended here: the pod has no step of it due any more."""
        return self.store.finish_chain(self.uid, self.fence, task)


class StepLock(Lock):
    """A pod lock held for one task step, with its fresh :attr:`record` and deferred writes.

    A write is kept here until the step's next side effect (:meth:`guard` sends it with the guard),
    its next write with an event for another node, or its end: :meth:`schedule_next`,
    :meth:`finish_chain` or the end of the ``with`` block send the step's writes, the due step and
    the lock's release in one Lua call (:data:`~vkec2.store.scripts.STEP_END`). Writes between two
    side effects are applied together, atomically, in their order (later fields win, every event
    is appended): nothing could observe them one by one to act on it. A write refused as stale
    raises at the call that sends it. Nothing in the block may read back the record from Redis
    expecting its own unsent writes (the step works on :attr:`record`).
    """

    def __init__(
        self, store: PodRecords, uid: str, token: str, fence: int, ttl_ms: int, record: PodRecord | None
    ) -> None:
        super().__init__(store, uid, token, fence, ttl_ms)
        self.pods = store
        #: The record as it was when the lock was taken (None: a record without its fields).
        self.record = record
        self._fields: dict[str, str] = {}
        self._events: list[list[str]] = []
        self._node = ""
        self._released = False

    def write(self, values: Mapping[str, Any], event: StatusEvent | None = None, node: str = "") -> None:
        if self._released:  # after the step's end: an ordinary fenced write
            super().write(values, event, node)
            return
        if event is not None and self._events and (node or "-") != self._node:
            self._send("write")
        self._fields.update(PodRecord.encode({**values, "updated_at": now()}))
        if event is not None:
            self._node = node or "-"
            self._events.append([item for pair in event.to_fields().items() for item in pair])

    def guard(self) -> None:
        """Send the writes so far and extend the lock if it and the fence hold (else StaleFence)."""
        if self._released:
            super().guard()
            return
        self._send("guard", when=self.ttl_ms)

    def schedule_next(self, next_task: str, step: DueStep, due_at: float) -> None:
        """The step's writes, the record naming ``next_task``, the pod due it at ``due_at``, and the
        release, in one call (the step is over)."""
        self._fields.update(PodRecord.encode({"next_task": next_task, "updated_at": now()}))
        self._send("next", when=due_at, step=step)

    def finish_chain(self, task: str) -> bool:
        """The step's writes, the due step of ``task`` cleared (when it is the pod's), and the release."""
        return self._send("finish", task=task)

    def close(self) -> None:
        """The end of the block: send what is left with the release (once)."""
        if not self._released:
            self._send("release")

    def _send(self, mode: str, *, when: float = 0.0, step: DueStep | None = None, task: str = "") -> bool:
        anything = bool(self._fields or self._events)
        fields, events, node = self._fields, self._events, self._node
        self._fields, self._events = {}, []
        if mode != "guard":
            self._released = True
        written, finished = self.pods.step_end(
            self, mode, fields, events, node, when=when, step=step, task=task
        )
        # As the separate calls answered: a write, a guard or a schedule refused raises; a finish or a
        # release with nothing to write just did not clear the due step.
        checked = anything or mode in ("guard", "next")
        if checked and (written == 0 or (written == -1 and mode == "guard" and not anything)):
            raise StaleFence(f"pod {self.uid}: lock or fence {self.fence} lost; another task owns the pod")
        if checked and written == -1:
            raise UnknownPod(f"no pod record for uid {self.uid}")
        return finished
