"""The invariants every chaos scenario is held to, and how each is observed.

- ``duplicates``: never two live (pending or running) instances for one pod UID — sampled from
  moto every second while the scenario runs (:class:`DuplicateSampler`) and once at its end.
- ``leaks``: after the pods are gone and two orphan GC passes ran, no live instance of the
  scenario's cluster is left.
- ``desired``: every pod reached its desired state — Running while its manifest exists (after the
  fault, too), its record gone once its manifest was removed.
- ``stuck``: no pod left in a non-terminal phase (creating or Terminating) when its stage's
  deadline passed.
- ``live_kills``: no instance of a live pod was terminated except one whose agent or instance the
  suite itself broke (the double's log of TerminateInstances answers against the fault ledger and
  the times the pods were deleted).

EC2 is observed at moto itself, so the checks see no lag and are not throttled.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tests.chaos.faults import FaultLedger
from tests.support.awslike import EventLog
from tests.support.fleet import FleetHarness
from vkec2.domain.models import Phase
from vkec2.domain.phases import CREATING_PHASES
from vkec2.store.redis_store import StoreError

INVARIANTS = ("duplicates", "leaks", "desired", "stuck", "live_kills")
EVERY_STATE = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")


@dataclass
class Findings:
    """What a scenario broke: for each invariant, the lines that say how (empty: it held)."""

    broken: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in INVARIANTS})

    def add(self, invariant: str, line: str) -> None:
        lines = self.broken[invariant]
        if line not in lines:
            lines.append(line)

    def held(self, invariant: str) -> bool:
        return not self.broken[invariant]

    @property
    def ok(self) -> bool:
        return all(not lines for lines in self.broken.values())


def duplicates(fleet: FleetHarness) -> dict[str, list[str]]:
    """Pod UIDs with more than one live instance right now."""
    return {uid: ids for uid, ids in fleet.instances_by_uid().items() if uid and len(ids) > 1}


class DuplicateSampler:
    """Samples :func:`duplicates` every ``interval`` seconds in the background until stopped."""

    def __init__(self, fleet: FleetHarness, findings: Findings, interval: float = 1.0) -> None:
        self._fleet = fleet
        self._findings = findings
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)
        self.samples = 0

    def __enter__(self) -> DuplicateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        try:
            found = duplicates(self._fleet)
        except Exception:  # moto busy for a moment: the next sample sees it
            return
        self.samples += 1
        for uid, ids in found.items():
            self._findings.add("duplicates", f"pod {uid[:8]} had {len(ids)} live instances: {sorted(ids)}")


def check_running(
    fleet: FleetHarness, uids: Iterable[str], findings: Findings, when: str, replaced: Mapping[str, str]
) -> None:
    """``desired`` and ``stuck`` for pods that should be Running now (those in ``replaced`` on
    another instance than the one the suite broke)."""
    for uid in uids:
        try:
            rec = fleet.store.get(uid)
        except StoreError as exc:
            findings.add("desired", f"{when}: Redis unreadable: {exc}")
            return
        if rec is None:
            findings.add("desired", f"{when}: pod {uid[:8]} has no record")
        elif rec.phase is not Phase.RUNNING:
            findings.add("desired", f"{when}: pod {uid[:8]} is {rec.phase.value} ({rec.reason})")
            if rec.phase in CREATING_PHASES:
                findings.add("stuck", f"{when}: pod {uid[:8]} stuck in {rec.phase.value} ({rec.reason})")
        elif rec.instance_id and rec.instance_id == replaced.get(uid):
            findings.add("desired", f"{when}: pod {uid[:8]} still on its broken instance {rec.instance_id}")


def check_gone(fleet: FleetHarness, uids: Iterable[str], findings: Findings) -> None:
    """``desired`` and ``stuck`` for pods whose manifest was removed: no record may be left."""
    for uid in uids:
        try:
            rec = fleet.store.get(uid)
        except StoreError as exc:
            findings.add("desired", f"after delete: Redis unreadable: {exc}")
            return
        if rec is not None:
            findings.add("desired", f"after delete: pod {uid[:8]} still has a record ({rec.phase.value})")
            if rec.phase is Phase.TERMINATING or rec.phase in CREATING_PHASES:
                findings.add("stuck", f"after delete: pod {uid[:8]} stuck in {rec.phase.value}")


def check_leaks(fleet: FleetHarness, findings: Findings) -> None:
    """``leaks``: live instances of the cluster after the pods are gone and GC ran."""
    for uid, ids in fleet.instances_by_uid().items():
        findings.add("leaks", f"{len(ids)} instance(s) of pod {uid[:8] or '(none)'} left: {sorted(ids)}")


def check_live_kills(
    fleet: FleetHarness,
    log: EventLog,
    since: float,
    deleted_at: Mapping[str, float],
    ledger: FaultLedger,
    findings: Findings,
) -> None:
    """``live_kills``: TerminateInstances of a live pod's instance the suite did not break."""
    owner = {iid: uid for uid, ids in fleet.instances_by_uid(EVERY_STATE).items() for iid in ids if uid}
    for event in log.events("TerminateInstances"):
        if event.at < since or event.outcome != "ok":
            continue
        for iid in event.terminated:
            uid = owner.get(iid)
            if uid is None or ledger.faulted(iid):
                continue
            gone = deleted_at.get(uid)
            if gone is None or event.at < gone:
                findings.add("live_kills", f"instance {iid} of live pod {uid[:8]} terminated")
