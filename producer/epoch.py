"""The producer's side of the Redis epoch: notice that Redis lost its data, and relist to rebuild.

Redis keeps an ``epoch`` (:mod:`vkec2.store.epoch`): an ID written once per Redis data set. Every
full pod list of this producer reads the epoch *before* listing (creating it when missing), writes
the records, and then records ``reconciled[node] = epoch`` (which also re-adds the node to ``nodes``),
so the fleet's destructive passes know this node's records are complete at that epoch.
:meth:`EpochWatch.check` runs on every heartbeat (every lease interval, about 10 s): an epoch
missing or different from the one this producer last reconciled at means Redis lost its data, so it
logs a warning, counts it (``vkec2_redis_data_losses_total``) and asks for a fresh list at once
(the pod watcher in Kubernetes mode, the manifest source in standalone mode). Records re-created by
a full list carry the ``rebuilt`` flag, which makes their first create step look up what EC2 still
knows of the pod (row C27) instead of launching with a reused ClientToken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vkec2.observability import metrics
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)


class EpochWatch:
    """One producer's knowledge of the Redis epoch and its requests for a relist."""

    def __init__(self, store: Store, node: str, on_loss: Callable[[], None] | None = None) -> None:
        self.store = store
        self.node = node
        #: Called (from the heartbeat) when a relist is wanted, to wake the lister up.
        self.on_loss = on_loss
        #: The epoch this producer last reconciled at (None before its first full list).
        self.known: str | None = None
        #: Set when Redis lost its data and the pods are to be listed again.
        self.relist = threading.Event()
        self.losses = 0

    def before_list(self) -> str:
        """The epoch a full list is about to be made at (created when Redis has none); clears a request."""
        self.relist.clear()
        return self.store.ensure_epoch()

    def listed(self, epoch: str) -> None:
        """The full list made at ``epoch`` is reconciled: every pod of the node has its record."""
        self.store.mark_reconciled(self.node, epoch)
        if self.known is not None and self.known != epoch:
            log.info("node %s: pod records rebuilt at Redis epoch %s", self.node, epoch)
        self.known = epoch

    def check(self) -> bool:
        """Compare Redis's epoch with the known one (creating it when missing); True when a relist is due."""
        current = self.store.ensure_epoch()
        if self.known is None or current == self.known:
            return False
        if not self.relist.is_set():
            self.losses += 1
            metrics.REDIS_DATA_LOSSES.inc()
            log.warning(
                "Redis lost its data (epoch changed from %s to %s): relisting and rebuilding records "
                "of node %s",
                self.known,
                current,
                self.node,
            )
            self.relist.set()
            if self.on_loss is not None:
                self.on_loss()
        return True

    def run(self, stop: threading.Event, interval: float) -> None:
        """Check every ``interval`` seconds (standalone mode, which has no heartbeat)."""
        while not stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # Redis unreachable: the next check tries again
                log.warning("node %s: cannot read the Redis epoch: %s", self.node, exc)
