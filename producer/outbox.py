"""Consume one node's status outbox (a Redis Stream) with a consumer group, at least once.

Workers append a :class:`~vkec2.models.StatusEvent` to ``outbox:{node}`` with every state write;
the producer of that node reads them through the consumer group ``producer`` and acknowledges an
entry only after its handler succeeded (for Kubernetes mode: after the ``pods/status`` write and
the Event). An entry whose handler failed stays pending and is retried; entries left pending by a
producer that died are taken over with XAUTOCLAIM once they have been idle for ``claim_idle``
seconds. :meth:`OutboxConsumer.stalled` tells the node health check whether the outbox is really
being consumed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from vkec2.domain.models import StatusEvent
from vkec2.store.redis_store import Store, StoreError

log = logging.getLogger(__name__)

GROUP = "producer"
Handler = Callable[[str, StatusEvent], None]


def consumer_name() -> str:
    """A name unique to this process (a restarted producer is a new consumer of the group)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class OutboxConsumer:
    """Reads ``outbox:{node}`` and hands each event to ``handler``; ack after it returns."""

    def __init__(
        self,
        store: Store,
        node: str,
        handler: Handler,
        *,
        name: str | None = None,
        claim_idle: float = 30.0,
        block: float = 1.0,
        batch: int = 100,
        retry_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.node = node
        self.handler = handler
        self.name = name or consumer_name()
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self.block_ms = max(1, int(block * 1000))
        self.batch = batch
        self.retry_interval = retry_interval
        self.last_loop = time.monotonic()
        self.handled = 0
        self._group_ready = False

    # -- state for the health check ---------------------------------------------------------------

    def stalled(self, limit: float) -> str | None:
        """Why the outbox is not being consumed (loop silent, or an entry pending too long), or None."""
        silent = time.monotonic() - self.last_loop
        if silent > limit:
            return f"the status outbox consumer has not run for {silent:.0f}s"
        pending = self.store.outbox_pending(self.node, GROUP)  # None: nothing pending, or no group yet
        if pending:
            count, oldest = pending
            age = time.time() - _entry_ms(oldest) / 1000
            if age > limit:
                return f"{count} status events pending, the oldest for {age:.0f}s"
        return None

    # -- the loop -----------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        self.store.outbox_ensure_group(self.node, GROUP)
        self._group_ready = True

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; wait for ``ready`` (the first full pod list) before handling."""
        next_retry = next_claim = 0.0
        while not stop.is_set():
            self.last_loop = time.monotonic()
            if ready is not None and not ready.is_set():
                ready.wait(self.block_ms / 1000)
                continue
            try:
                self.ensure_group()
                now = time.monotonic()
                if now >= next_retry:  # our own entries that failed before
                    next_retry = now + self.retry_interval
                    self._handle(self._read("0"))
                if now >= next_claim:  # entries a dead producer of this node left pending
                    next_claim = now + min(self.claim_idle_ms / 1000, 10.0)
                    self._handle(self._claim())
                self._handle(self._read(">", block=True))
            except StoreError as exc:
                self._group_ready = False
                log.warning("status outbox of %s: Redis error: %s", self.node, exc)
                stop.wait(1.0)

    def _read(self, start: str, block: bool = False) -> list[tuple[str, dict[str, str]]]:
        return self.store.outbox_read(
            self.node, GROUP, self.name, start, self.batch, self.block_ms if block else None
        )

    def _claim(self) -> list[tuple[str, dict[str, str]]]:
        claimed = self.store.outbox_claim(self.node, GROUP, self.name, self.claim_idle_ms, self.batch)
        if claimed:
            log.info("took over %d status events of a stopped producer of %s", len(claimed), self.node)
        return [(entry_id, fields) for entry_id, fields in claimed if fields]

    def _handle(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in entries:
            try:
                event = StatusEvent.from_fields(fields)
            except (KeyError, ValueError) as exc:
                log.error("dropping malformed status event %s of %s: %s", entry_id, self.node, exc)
                self.store.outbox_ack(self.node, GROUP, entry_id)
                continue
            try:
                self.handler(entry_id, event)
            except StoreError:
                raise
            except Exception as exc:
                # Keep it pending; later entries wait too so each pod's events stay in order.
                log.warning("status event %s for pod %s not applied yet: %s", entry_id, event.uid, exc)
                return
            self.store.outbox_ack(self.node, GROUP, entry_id)
            self.handled += 1
