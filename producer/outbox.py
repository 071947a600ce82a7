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
from typing import Any, cast

import redis

from vkec2.domain.models import StatusEvent
from vkec2.store.redis_store import Store

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
        self.key = store.keys.outbox(node)
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
        try:
            info: dict[str, Any] = self.store.redis.xpending(self.key, GROUP)
        except redis.ResponseError:
            return None  # no group yet: nothing pending
        oldest = info.get("min") if info else None
        if oldest:
            age = time.time() - _entry_ms(str(oldest)) / 1000
            if age > limit:
                return f"{info.get('pending', 0)} status events pending, the oldest for {age:.0f}s"
        return None

    # -- the loop -----------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.store.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
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
            except redis.RedisError as exc:
                self._group_ready = False
                log.warning("status outbox of %s: Redis error: %s", self.node, exc)
                stop.wait(1.0)

    def _read(self, start: str, block: bool = False) -> list[tuple[str, dict[str, str]]]:
        found = self.store.redis.xreadgroup(
            GROUP, self.name, {self.key: start}, count=self.batch, block=self.block_ms if block else None
        )
        entries: list[tuple[str, dict[str, str]]] = []
        for _stream, items in cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], found or []):
            entries += [(entry_id, fields) for entry_id, fields in items if fields]
        return entries

    def _claim(self) -> list[tuple[str, dict[str, str]]]:
        result: list[Any] = self.store.redis.xautoclaim(
            self.key, GROUP, self.name, min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch
        )
        claimed = cast(list[tuple[str, dict[str, str]]], result[1] if len(result) > 1 else [])
        if claimed:
            log.info("took over %d status events of a stopped producer of %s", len(claimed), self.node)
        return [(entry_id, fields) for entry_id, fields in claimed if fields]

    def _handle(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in entries:
            try:
                event = StatusEvent.from_fields(fields)
            except (KeyError, ValueError) as exc:
                log.error("dropping malformed status event %s of %s: %s", entry_id, self.node, exc)
                self.store.redis.xack(self.key, GROUP, entry_id)
                continue
            try:
                self.handler(entry_id, event)
            except redis.RedisError:
                raise
            except Exception as exc:
                # Keep it pending; later entries wait too so each pod's events stay in order.
                log.warning("status event %s for pod %s not applied yet: %s", entry_id, event.uid, exc)
                return
            self.store.redis.xack(self.key, GROUP, entry_id)
            self.handled += 1
