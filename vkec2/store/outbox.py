"""The status outbox in Redis: one stream per virtual node, read by the producer's consumer group.

Workers append to ``outbox:{node}`` inside the fenced pod write (:mod:`vkec2.store.pods`); this
part of the store is the reading side: a plain range read for tests and the CLI, and the consumer
group operations the producer's :class:`~producer.outbox.OutboxConsumer` is built on (create the
group, read new or own pending entries, take over entries another consumer left pending,
acknowledge, see what is waiting, trim what it settled) and the node's dead-letter stream
``outbox:{node}:dead``: an entry the producer gave up on moves there with its reason in one
transaction with its acknowledgement, and ``vkec2 status`` reads the newest ones back. Entries come back as
``(entry ID, fields)`` pairs; decoding them into :class:`~vkec2.domain.models.StatusEvent` is the
caller's business where a malformed entry must be handled on its own.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from vkec2.domain.models import StatusEvent
from vkec2.store.base import StoreBase

Entry = tuple[str, dict[str, str]]

#: About how many entries a node's dead-letter stream keeps (the oldest are trimmed).
DEAD_LETTER_CAP = 1000


class OutboxStreams(StoreBase):
    """Reading and acknowledging a node's status outbox."""

    def outbox_events(
        self, node: str, after: str = "0-0", count: int = 1000
    ) -> list[tuple[str, StatusEvent]]:
        """Read outbox entries after an ID (for tests and the CLI; the producer uses a group)."""
        entries = cast(
            list[Entry],
            self.redis.xrange(self.keys.outbox(node), min=f"({after}", count=count),
        )
        return [(entry_id, StatusEvent.from_fields(raw)) for entry_id, raw in entries]

    def outbox_ensure_group(self, node: str, group: str) -> None:
        """Create the consumer group ``group`` on the node's outbox (and the stream) unless it exists."""
        try:
            self.redis.xgroup_create(self.keys.outbox(node), group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def outbox_pending(self, node: str, group: str) -> tuple[int, str] | None:
        """How many entries ``group`` has pending and the oldest one's ID; None when none or no group."""
        try:
            info: dict[str, Any] = self.redis.xpending(self.keys.outbox(node), group)
        except redis.ResponseError:
            return None  # no group yet: nothing pending
        oldest = info.get("min") if info else None
        if not oldest:
            return None
        return int(info.get("pending", 0)), str(oldest)

    def outbox_read(
        self, node: str, group: str, consumer: str, start: str, count: int, block_ms: int | None = None
    ) -> list[Entry]:
        """Entries for ``consumer``: new ones (``start=">"``) or its own pending ones (``"0"``).

        Blocks up to ``block_ms`` for new entries when given. A pending entry trimmed from the stream
        meanwhile comes back with empty fields (to be acknowledged).
        """
        found = self.redis.xreadgroup(
            group, consumer, {self.keys.outbox(node): start}, count=count, block=block_ms
        )
        entries: list[Entry] = []
        for _stream, items in cast(list[tuple[str, list[Entry]]], found or []):
            entries += [(entry_id, fields or {}) for entry_id, fields in items]
        return entries

    def outbox_claim(self, node: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries of ``group`` left pending by any consumer for at least ``min_idle_ms``.

        An entry trimmed from the stream meanwhile comes back with empty fields.
        """
        result: list[Any] = self.redis.xautoclaim(
            self.keys.outbox(node), group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        return cast(list[Entry], result[1] if len(result) > 1 else [])

    def outbox_ack(self, node: str, group: str, entry_id: str) -> None:
        """Acknowledge one entry: it is no longer pending for ``group``."""
        self.redis.xack(self.keys.outbox(node), group, entry_id)

    def outbox_trim(self, node: str, group: str) -> int:
        """Drop the entries ``group`` has settled (older than its oldest pending one); how many went.

        Entries are the status the producer was told; once settled nobody reads them again, so the
        stream holds only what is unread or pending instead of the last ``OUTBOX_MAXLEN`` events.
        """
        return int(self.scripts.trim_settled(keys=[self.keys.outbox(node)], args=[group]))

    def outbox_oldest_unread(self, node: str, group: str) -> str | None:
        """The ID of the oldest entry ``group`` has not been handed yet; None when it has read them all."""
        key = self.keys.outbox(node)
        try:
            groups: list[dict[str, Any]] = self.redis.xinfo_groups(key)
        except redis.ResponseError:
            return None  # no stream yet: nothing to read
        delivered = next((str(g.get("last-delivered-id")) for g in groups if g.get("name") == group), None)
        if delivered is None:
            return None
        newer = cast(list[Entry], self.redis.xrange(key, min=f"({delivered}", count=1))
        return newer[0][0] if newer else None

    def outbox_dead_letter(
        self, node: str, group: str, entry_id: str, fields: dict[str, str], reason: str, attempts: int
    ) -> None:
        """Move one entry to ``outbox:{node}:dead`` with why and after how many tries, and acknowledge it."""
        dead: dict[Any, Any] = {**fields, "entry": entry_id, "error": reason, "attempts": str(attempts)}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.outbox_dead(node), dead, maxlen=DEAD_LETTER_CAP, approximate=True)
            pipe.xack(self.keys.outbox(node), group, entry_id)
            pipe.execute()

    def outbox_dead_letters(self, node: str, newest: int = 3) -> tuple[int, list[Entry]]:
        """How many entries the node's dead-letter stream holds, and the ``newest`` of them (newest first)."""
        key = self.keys.outbox_dead(node)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(key)
            pipe.xrevrange(key, count=newest)
            count, entries = pipe.execute()
        return int(count), cast(list[Entry], entries)
