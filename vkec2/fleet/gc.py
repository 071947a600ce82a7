"""Orphan GC: terminate instances tagged for this cluster that no live pod owns, carefully.

A pass (:meth:`OrphanGc.run`, the body of ``vkec2.maintenance.gc``) lists the cluster's instances
with one paginated DescribeInstances and the pod UIDs Redis knows. An instance is an orphan
candidate when its ``vkec2.io/pod-uid`` tag (or, for a batch-launched instance whose pod tags are
not written yet, the pod Redis holds them for) names no pod record (or it has none) and it is not a
warm-pool member, and it was launched more than ``gc.grace_seconds`` ago. Candidates are remembered
in the ``gc:sightings`` hash with the number of the pass that saw them; one seen on two consecutive
passes is terminated (in one batched call), logged and counted in ``gc:stats``. Anything that stops
being a candidate is forgotten, so a pod that appears meanwhile saves its instance. Nothing is
destroyed while Redis may not know every live pod (:mod:`vkec2.fleet.epochgate`): the pass is
skipped, and says why, until Redis has an epoch and every node in ``nodes`` has relisted its pods at
it; an instance whose ``vkec2.io/node`` tag names a node that has not is never a candidate.
``gc.dry_run`` logs and counts what would be terminated and touches nothing. The pass also hands
Running pods whose instance is no longer listed to remediation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vkec2.config import Settings
from vkec2.contract import TAG_POD_UID, TAG_POOL
from vkec2.domain.instances import Instance, tag_map
from vkec2.fleet.epochgate import read_gate
from vkec2.fleet.warmpool import launch_time
from vkec2.ports import Ec2
from vkec2.store.redis_store import Store

log = logging.getLogger("vkec2.fleet.gc")


@dataclass
class GcReport:
    pass_number: int = 0
    instances: int = 0
    candidates: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    would_terminate: list[str] = field(default_factory=list)
    lost_pods: list[str] = field(default_factory=list)
    skipped: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "pass": self.pass_number,
            "instances": self.instances,
            "candidates": len(self.candidates),
            "terminated": self.terminated,
            "would_terminate": self.would_terminate,
            "lost_pods": len(self.lost_pods),
            "skipped": self.skipped,
        }


def is_orphan(instance: Instance, known_uids: set[str], untagged: Mapping[str, str] | None = None) -> bool:
    """True when no pod and no warm pool owns this cluster instance. A batch-launched instance whose
    pod tags are not written yet is owned by the pod ``untagged`` names for it."""
    tags = tag_map(instance)
    uid = tags.get(TAG_POD_UID, "") or (untagged or {}).get(instance["InstanceId"], "")
    if uid:
        return uid not in known_uids
    return not tags.get(TAG_POOL)


class OrphanGc:
    """The orphan collector of one cluster."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ec2: Ec2,
        on_lost: Callable[[dict[str, Instance]], list[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.on_lost = on_lost
        self.clock = clock

    def run(self) -> GcReport:
        report = GcReport()
        with self.store.gc_flight(300_000) as held:
            if held:
                self._run(report)
            else:
                report.skipped = "another pass is running"
        return report

    def _run(self, report: GcReport) -> None:
        now = self.clock()
        grace = self.settings.gc.grace_seconds
        gate = read_gate(self.store)  # before the listing: a node reconciled later is not trusted
        if not gate.open:
            report.skipped = gate.reason
            log.warning("orphan GC skipped: %s", report.skipped)
            return
        live = self.ec2.cluster_instances()
        known = self.store.uids()
        untagged = {iid: entry.uid for iid, entry in self.store.pending_pod_tags().items()}
        report.instances = len(live)
        report.pass_number = number = self.store.gc_begin_pass()
        old = self.store.gc_sightings()
        sightings: dict[str, dict[str, Any]] = {}
        doomed: list[str] = []
        for inst in live:
            iid = inst["InstanceId"]
            if (
                not is_orphan(inst, known, untagged)
                or not gate.covers(inst)
                or now - launch_time(inst) < grace
            ):
                continue
            report.candidates.append(iid)
            seen = old.get(iid)
            if seen is not None and int(seen["last"]) == number - 1:
                entry = {"first": seen["first"], "last": number, "count": int(seen["count"]) + 1}
            else:
                entry = {"first": number, "last": number, "count": 1}
            sightings[iid] = entry
            if entry["count"] >= 2:
                doomed.append(iid)
        self.store.gc_replace_sightings(sightings)
        if doomed:
            uid_of = {
                i["InstanceId"]: tag_map(i).get(TAG_POD_UID, "") or untagged.get(i["InstanceId"], "")
                for i in live
            }
            if self.settings.gc.dry_run:
                report.would_terminate = doomed
                self.store.gc_count("would_terminate", len(doomed))
                for iid in doomed:
                    log.warning(
                        "orphan GC (dry run): would terminate %s (pod UID %r unknown)", iid, uid_of[iid]
                    )
            else:
                # Last look before destroying: a pod record may have appeared since the listing.
                fresh = self.store.uids()
                doomed = [iid for iid in doomed if not uid_of[iid] or uid_of[iid] not in fresh]
                self.ec2.terminate(doomed)
                self.store.gc_forget_sightings(doomed)
                self.store.gc_count("terminated", len(doomed))
                report.terminated = doomed
                for iid in doomed:
                    log.warning(
                        "orphan GC: terminated %s (pod UID %r unknown, seen on two passes)", iid, uid_of[iid]
                    )
        if self.on_lost is not None:
            report.lost_pods = self.on_lost({i["InstanceId"]: i for i in live})
