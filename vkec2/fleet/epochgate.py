"""The gate of the fleet's destructive passes after Redis lost its data: every node must have caught up.

Orphan GC and warm-pool shrinking decide what to terminate from what Redis knows. Right after Redis
lost its data (see :mod:`vkec2.store.epoch`) it knows nothing, and for up to one lease interval a
producer may not have noticed and rebuilt its pod records yet, so a live pod's instance would look
like an orphan. :func:`read_gate` says whether the passes may run: the epoch exists and every node in
``nodes`` has reconciled at it; otherwise it names why not. :meth:`EpochGate.covers` additionally
says whether an instance belongs to a node that has reconciled at the current epoch or was removed
(an instance of a node that has not re-registered since the loss is never an orphan candidate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vkec2.contract import TAG_NODE
from vkec2.domain.instances import Instance, tag_map
from vkec2.store.redis_store import Store


@dataclass(frozen=True)
class EpochGate:
    """What the epoch says about the fleet's destructive passes now."""

    epoch: str | None
    #: Nodes whose producer listed its pods and rebuilt their records at the current epoch.
    current: frozenset[str] = field(default_factory=frozenset)
    #: Nodes removed by ``vkec2 node drain``: whatever they left behind may be collected.
    removed: frozenset[str] = field(default_factory=frozenset)
    #: Why the passes must wait ("" when they may run).
    reason: str = ""

    @property
    def open(self) -> bool:
        return not self.reason

    def covers(self, instance: Instance) -> bool:
        """True unless the instance's ``vkec2.io/node`` tag names a node not reconciled at this epoch
        (and not removed)."""
        node = tag_map(instance).get(TAG_NODE, "")
        return not node or node in self.current or node in self.removed


def read_gate(store: Store) -> EpochGate:
    """The gate as Redis has it now."""
    epoch = store.epoch()
    if epoch is None:
        return EpochGate(None, reason="Redis has no epoch: it lost its data and no producer has noticed yet")
    reconciled = store.reconciled()
    current = frozenset(node for node, seen in reconciled.items() if seen == epoch)
    removed = frozenset(store.removed_nodes())
    behind = sorted(store.nodes() - current)
    if behind:
        return EpochGate(
            epoch,
            current,
            removed,
            reason=f"node(s) {', '.join(behind)} have not relisted their pods since Redis's epoch {epoch}",
        )
    return EpochGate(epoch, current, removed)
