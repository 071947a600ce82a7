"""Consume one node's status outbox (a Redis Stream) with a consumer group, at least once, never stalling.

Workers append a :class:`~vkec2.models.StatusEvent` to ``outbox:{node}`` with every state write;
the producer of that node reads them through the consumer group ``producer`` and acknowledges an
entry only after its sink applied it (for Kubernetes mode: after the ``pods/status`` write and the
Event). Entries left pending by a producer that died are taken over with XAUTOCLAIM once they have
been idle for ``claim_idle`` seconds; this consumer's own pending entries are read back at start.
Settled entries are trimmed from the stream every :data:`TRIM_INTERVAL` (nothing reads them
again), so it holds what is unsettled only.

One pod never holds up another. An entry whose sink fails is *held* for its pod, in memory (it
stays pending in Redis), and retried with a back-off (``retry_interval``, doubling, at most
:data:`MAX_BACKOFF`) while the entries of other pods go on being applied. Within a pod the newer
entry *supersedes* a held one instead of queueing behind it: every entry carries the pod's full
status and the sink writes the pod record's current state anyway (see
:class:`producer.status.FleetView`), so the older entry has nothing the newer lacks and applying it
first would only delay the newer; the superseded entry is acknowledged (its Event is not emitted)
and its failures carry over to the newer one, so a pod that is always refused still reaches the
limit. A failure the sink calls :meth:`~StatusSink.transient` (the API server unreachable or
overloaded) is retried without counting; after ``max_attempts`` counted failures the entry goes to
the dead-letter stream ``outbox:{node}:dead`` with the error's text and is acknowledged, with a
metric, a log line and the sink's :meth:`~StatusSink.dead_lettered` (a Warning Event on the pod in
Kubernetes mode). The periodic status resync (:mod:`producer.status`) heals what a dead-lettered,
superseded or trimmed entry did not deliver.

:meth:`OutboxConsumer.stalled` tells the node health check whether the consumer is moving: its
loop ran recently, no entry waits unread for too long, and entries handed to it but not held for
a pod's retry do not sit there while nothing is settled. A pod whose status is refused is never a
reason: its entry is held, then superseded or dead-lettered.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from vkec2.domain.models import StatusEvent
from vkec2.observability.metrics import STATUS_EVENTS
from vkec2.store.redis_store import Store, StoreError

log = logging.getLogger(__name__)

GROUP = "producer"
#: The longest wait between two tries of a held entry, seconds.
MAX_BACKOFF = 30.0
#: Seconds between two trims of the entries the group settled (the stream keeps only unsettled ones).
TRIM_INTERVAL = 1.0
Entry = tuple[str, dict[str, str]]


class StatusSink(Protocol):
    """What the consumer hands entries to (Kubernetes mode: ``KubeStatusSink``; standalone mode)."""

    def __call__(self, entry_id: str, event: StatusEvent) -> None:
        """Apply one entry; raise to have it retried."""

    def transient(self, exc: Exception) -> bool:
        """Whether a failure says nothing about the entry (retry it without counting towards the limit)."""

    def dead_lettered(self, entry_id: str, event: StatusEvent, reason: str) -> None:
        """Best effort: tell whoever should know that an entry was given up on (must not raise)."""


def consumer_name() -> str:
    """A name unique to this process (a restarted producer is a new consumer of the group)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Held:
    """A pod's entry that failed and waits for its next try."""

    entry_id: str
    fields: dict[str, str]
    event: StatusEvent
    failures: int  # counted towards the dead-letter limit
    tries: int  # every failure, for the back-off
    due: float  # monotonic time of the next try


class OutboxConsumer:
    """Reads ``outbox:{node}`` and hands each event to ``sink``; ack after it returns."""

    def __init__(
        self,
        store: Store,
        node: str,
        sink: StatusSink,
        *,
        name: str | None = None,
        claim_idle: float = 30.0,
        block: float = 1.0,
        batch: int = 100,
        retry_interval: float = 1.0,
        max_attempts: int = 5,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.store = store
        self.node = node
        self.sink = sink
        self.name = name or consumer_name()
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self.block_ms = max(1, int(block * 1000))
        self.batch = batch
        self.retry_interval = retry_interval
        self.max_attempts = max_attempts
        self.last_loop = time.monotonic()
        self.last_progress = time.monotonic()  # an entry read or settled
        self.handled = 0
        self.dead = 0
        self._held: dict[str, _Held] = {}  # pod UID -> its entry waiting for a retry
        self._lock = threading.Lock()  # the heartbeat thread reads the held entries
        self._group_ready = False

    # -- state for the health check ---------------------------------------------------------------

    def held(self) -> dict[str, str]:
        """Pod UID -> the ID of its entry waiting for a retry."""
        with self._lock:
            return {uid: held.entry_id for uid, held in self._held.items()}

    def stalled(self, limit: float) -> str | None:
        """Why the consumer is not moving (loop silent, entries unread or unsettled too long), or None."""
        silent = time.monotonic() - self.last_loop
        if silent > limit:
            return f"the status outbox consumer has not run for {silent:.0f}s"
        unread = self.store.outbox_oldest_unread(self.node, GROUP)
        if unread is not None:
            age = time.time() - _entry_ms(unread) / 1000
            if age > limit:
                return f"status events wait unread, the oldest for {age:.0f}s"
        pending = self.store.outbox_pending(self.node, GROUP)  # None: nothing pending, or no group yet
        idle = time.monotonic() - self.last_progress
        if pending and idle > limit:
            count, oldest = pending
            waiting = count - len(self.held())
            age = time.time() - _entry_ms(oldest) / 1000
            if waiting > 0 and age > limit:
                return f"{waiting} status events pending, none settled for {idle:.0f}s"
        return None

    # -- the loop -----------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        self.store.outbox_ensure_group(self.node, GROUP)
        self._group_ready = True

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; wait for ``ready`` (the first full pod list) before handling."""
        next_claim = next_trim = 0.0
        own_pending = True  # read back what this consumer (same name) left pending, once per connection
        while not stop.is_set():
            self.last_loop = time.monotonic()
            if ready is not None and not ready.is_set():
                ready.wait(self.block_ms / 1000)
                continue
            try:
                self.ensure_group()
                if own_pending:
                    self.handle(self._read("0"))
                    own_pending = False
                self.retry_due()
                now = time.monotonic()
                if now >= next_claim:  # entries a dead producer of this node left pending
                    next_claim = now + min(self.claim_idle_ms / 1000, 10.0)
                    self.handle(self._claim())
                self.handle(self._read(">", block=True))
                if time.monotonic() >= next_trim:  # settled entries are never read again
                    next_trim = time.monotonic() + TRIM_INTERVAL
                    self.store.outbox_trim(self.node, GROUP)
            except StoreError as exc:
                self._group_ready = False
                own_pending = True
                log.warning("status outbox of %s: Redis error: %s", self.node, exc)
                stop.wait(1.0)

    def _read(self, start: str, block: bool = False) -> list[Entry]:
        # Block no longer than the next held entry is due.
        wait = self.block_ms
        with self._lock:
            if self._held:
                soonest = min(h.due for h in self._held.values()) - time.monotonic()
                wait = max(1, min(wait, int(soonest * 1000)))
        return self.store.outbox_read(self.node, GROUP, self.name, start, self.batch, wait if block else None)

    def _claim(self) -> list[Entry]:
        claimed = self.store.outbox_claim(self.node, GROUP, self.name, self.claim_idle_ms, self.batch)
        with self._lock:
            mine = {h.entry_id for h in self._held.values()}
        taken = [(entry_id, fields) for entry_id, fields in claimed if fields and entry_id not in mine]
        if taken:
            log.info("took over %d status events of a stopped producer of %s", len(taken), self.node)
        return taken

    # -- handling -----------------------------------------------------------------------------------

    def handle(self, entries: list[Entry]) -> None:
        """Apply entries in order; a pod's failing entry is held for a retry, the others go on."""
        if entries:
            self.last_progress = time.monotonic()
        for entry_id, fields in entries:
            if not fields:  # trimmed from the stream while pending: nothing left to apply
                self._settle(entry_id, "trimmed")
                continue
            try:
                event = StatusEvent.from_fields(fields)
            except (KeyError, ValueError) as exc:
                log.error("dropping malformed status event %s of %s: %s", entry_id, self.node, exc)
                self.store.outbox_ack(self.node, GROUP, entry_id)
                STATUS_EVENTS.labels("malformed").inc()
                continue
            with self._lock:
                held = self._held.get(event.uid)
            if held is not None and held.entry_id == entry_id:
                continue  # already held: retried when due
            if held is not None and _order(entry_id) < _order(held.entry_id):
                # An older entry (taken over late): the held one is newer.
                self._settle(entry_id, "superseded")
                continue
            self._attempt(entry_id, fields, event, held)

    def retry_due(self) -> None:
        """Try again every held entry whose back-off is over."""
        now = time.monotonic()
        with self._lock:
            due = [h for h in self._held.values() if h.due <= now]
        for held in sorted(due, key=lambda h: _order(h.entry_id)):
            self._attempt(held.entry_id, held.fields, held.event, held)

    def _attempt(self, entry_id: str, fields: dict[str, str], event: StatusEvent, held: _Held | None) -> None:
        try:
            self.sink(entry_id, event)
        except StoreError:
            raise
        except Exception as exc:
            self._failed(entry_id, fields, event, held, exc)
            return
        with self._lock:
            self._held.pop(event.uid, None)
        if held is not None and held.entry_id != entry_id:
            self._settle(held.entry_id, "superseded")
        self._settle(entry_id, "applied")
        self.handled += 1

    def _failed(
        self, entry_id: str, fields: dict[str, str], event: StatusEvent, held: _Held | None, exc: Exception
    ) -> None:
        counted = not self.sink.transient(exc)
        failures = (held.failures if held else 0) + int(counted)
        tries = (held.tries if held else 0) + 1
        if held is not None and held.entry_id != entry_id:
            self._settle(held.entry_id, "superseded")
        reason = str(exc) or type(exc).__name__
        if failures >= self.max_attempts:
            with self._lock:
                self._held.pop(event.uid, None)
            self.store.outbox_dead_letter(self.node, GROUP, entry_id, fields, reason, failures)
            self.last_progress = time.monotonic()
            self.dead += 1
            STATUS_EVENTS.labels("dead_lettered").inc()
            log.error(
                "status event %s for pod %s/%s (%s) dead-lettered after %d failures: %s",
                entry_id,
                event.namespace,
                event.name,
                event.uid,
                failures,
                reason,
            )
            self.sink.dead_lettered(entry_id, event, reason)
            return
        backoff = min(MAX_BACKOFF, self.retry_interval * 2 ** (tries - 1))
        due = time.monotonic() + backoff
        with self._lock:
            self._held[event.uid] = _Held(entry_id, fields, event, failures, tries, due)
        STATUS_EVENTS.labels("retried").inc()
        log.warning(
            "status event %s for pod %s not applied (failure %d of %d%s), retrying in %.1fs: %s",
            entry_id,
            event.uid,
            failures,
            self.max_attempts,
            "" if counted else ", transient: not counted",
            backoff,
            reason,
        )

    def _settle(self, entry_id: str, outcome: str) -> None:
        self.store.outbox_ack(self.node, GROUP, entry_id)
        self.last_progress = time.monotonic()
        STATUS_EVENTS.labels(outcome).inc()
