"""The Redis epoch: how the fleet notices that Redis lost its data, and which nodes have caught up since.

A Redis that restarts without persistence, fails over to an empty replica or is flushed comes back
empty, and an empty Redis looks exactly like a fleet with no pods. The ``epoch`` key tells the two
apart: a random ID and its creation time, written once (``SET NX``) by the first producer that uses
this Redis, so every data loss leaves a missing key and the next write a new ID. The ``reconciled``
hash records, per virtual node, the epoch at which that node's producer last listed its pods and
rewrote their records; a node whose entry is not the current epoch has not rebuilt what the loss
took, so the fleet's destructive passes (orphan GC, warm-pool shrinking) wait for it
(:mod:`vkec2.fleet.epochgate`). Removing a node (``vkec2 node drain``) forgets it here too and
records it in ``removed``, so what it left behind is garbage, not the pods of a silent producer.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import cast

from vkec2.store.base import StoreBase


class Epochs(StoreBase):
    """The epoch of this Redis and the nodes reconciled at it."""

    def ensure_epoch(self) -> str:
        """The current epoch's ID, creating the epoch first when Redis has none (a fresh or emptied Redis)."""
        fresh = json.dumps({"id": secrets.token_hex(8), "created": time.time()})
        self.redis.set(self.keys.epoch(), fresh, nx=True)
        return self.epoch() or ""

    def epoch(self) -> str | None:
        """The current epoch's ID, or None when Redis has none (nothing wrote it since the data went)."""
        raw = cast(str | None, self.redis.get(self.keys.epoch()))
        return str(json.loads(raw)["id"]) if raw else None

    def mark_reconciled(self, node: str, epoch: str) -> None:
        """``node``'s producer listed its pods and rewrote their records at ``epoch``; it is a node again."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.reconciled(), node, epoch)
        pipe.sadd(self.keys.nodes(), node)
        pipe.hdel(self.keys.removed(), node)
        pipe.execute()

    def reconciled(self) -> dict[str, str]:
        """Node -> the epoch of its last full reconcile."""
        return cast(dict[str, str], self.redis.hgetall(self.keys.reconciled()))

    def forget_node(self, node: str) -> None:
        """A removed node: out of ``nodes`` and ``reconciled``, its (empty) pod index dropped, and
        remembered as removed, so instances it left behind are orphans, not a silent node's."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.keys.nodes(), node)
        pipe.hdel(self.keys.reconciled(), node)
        pipe.delete(self.keys.node_pods(node))
        pipe.hset(self.keys.removed(), node, repr(time.time()))
        pipe.execute()

    def removed_nodes(self) -> set[str]:
        """Nodes ``vkec2 node drain`` removed (and that did not register again since)."""
        return set(cast(dict[str, str], self.redis.hgetall(self.keys.removed())))
