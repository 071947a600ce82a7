"""Capacity fallback: launching a pod's instance when EC2 has no capacity, and what the pod does meanwhile.

EC2 routinely refuses a launch for want of capacity (``InsufficientInstanceCapacity``,
``InsufficientHostCapacity``, ``Unsupported`` for a type not offered in a zone) or of quota
(``VcpuLimitExceeded``, ``InstanceLimitExceeded``); the codes are classified once, in
:data:`vkec2.contract.CAPACITY_ERROR_CODES`, and the gateway raises them as an
:class:`~vkec2.errors.Ec2Error` with ``capacity`` set. None of them fails the pod. The create step
tries the pod's *candidates* in order — its subnet, then the other configured subnets (zones), then
the same for each alternative instance type (the ``compute.amazonaws.com/instance-types``
annotation, or the pool's or ``ec2``'s ``instance_types``) — and skips every (instance type, zone)
pair that the fleet-wide cache in Redis marks unavailable (:mod:`vkec2.store.offerings`, for
``ec2.unavailable_ttl_seconds``); each capacity answer marks its pair (a quota marks the type in
the whole region), so no worker asks again for a while. Each candidate has its own ClientToken
(the pod's own parameters keep ``vkec2-{uid}-{attempt}``; another subnet or type adds a hash of
them), because EC2 refuses a token reused with other parameters. The market is part of a candidate:
a ``spot-or-on-demand`` pod tries every one as Spot, then every one as on-demand
(:func:`vkec2.domain.spot.markets`), and a Spot refusal marks its pair under a zone key of its own,
so it never hides on-demand capacity. When no candidate launched, the
pod stays Pending (reason ``InsufficientCapacity`` or ``QuotaExceeded``, AWS's answer in the
message, a Warning event, condition ``vkec2.io/QuotaExceeded`` for a quota) and the step is
polled again with a back-off, until ``ec2.capacity_deadline_seconds`` after the first refusal:
then the pod is Failed with AWS's last code and message. No instance exists at that point, so
nothing can leak. :class:`CapacityLaunch` does the launching; :class:`Verdict` is what
:class:`~vkec2.fleet.lifecycle.Lifecycle` records for an outcome without an instance.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from vkec2.config import Settings
from vkec2.config.model import RUN_INSTANCES_PER_STEP
from vkec2.contract import QUOTA_ERROR_CODES, QUOTA_EXCEEDED, REGION_WIDE, SPOT
from vkec2.domain.agents import AgentTrust
from vkec2.domain.instances import Instance, client_token
from vkec2.domain.models import Phase, PodRecord, condition, now
from vkec2.domain.podspec import LaunchParams, user_data_for
from vkec2.domain.spot import markets, offering_zone
from vkec2.domain.times import rfc3339
from vkec2.errors import Ec2Error
from vkec2.fleet.spot import settle_notice
from vkec2.ports import Ec2, OfferingMarks, PodLock

log = logging.getLogger(__name__)

#: The zone of a quota mark: the whole region.
#: The zone of a launch without a subnet (EC2 picks one).
ANY_ZONE = "any"
#: The first wait after every candidate was refused; it grows with the time waited.
CAPACITY_POLL_SECONDS = 5.0
#: The next step's delay while candidates are left that this step had no budget to try.
NEXT_CANDIDATE_SECONDS = 1.0

REASON_INSUFFICIENT_CAPACITY = "InsufficientCapacity"
REASON_QUOTA_EXCEEDED = "QuotaExceeded"
#: The Pending reasons of a pod waiting for capacity (its ``capacity_since`` counts only then).
WAIT_REASONS = frozenset({REASON_INSUFFICIENT_CAPACITY, REASON_QUOTA_EXCEEDED})


@dataclass(frozen=True)
class Candidate:
    """One way to launch the pod: parameters, the (instance type, zone) they use, their ClientToken."""

    params: LaunchParams
    zone: str
    token: str

    @property
    def offering(self) -> tuple[str, str]:
        return (self.params.instance_type, offering_zone(self.zone, self.params.capacity_type))

    @property
    def label(self) -> str:
        spot = " (spot)" if self.params.capacity_type == SPOT else ""
        return f"{self.params.instance_type}{spot} in {self.zone}"


@dataclass(frozen=True)
class NoCapacity:
    """No candidate launched: EC2's last answer (code, message), what was unavailable, what is left."""

    code: str
    message: str
    unavailable: tuple[str, ...]
    untried: bool = False  # candidates remain that this step had no budget for
    quota: bool = False

    @property
    def aws(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


@dataclass(frozen=True)
class Verdict:
    """What the pod records for a :class:`NoCapacity` outcome, and when to look again (None: never)."""

    phase: Phase
    reason: str
    message: str
    delay: float | None
    write: bool
    fields: dict[str, Any] = field(default_factory=dict)
    conditions: tuple[dict[str, Any], ...] = ()


def _variant(params: LaunchParams) -> str:
    """A short, stable name of a candidate's parameters for its ClientToken (Spot's differs)."""
    key = f"{params.instance_type}/{params.subnet_id or ''}"
    if params.capacity_type == SPOT:
        key += f"/{SPOT}"
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def candidates(
    settings: Settings, params: LaunchParams, uid: str, attempt: int, zones: Mapping[str, str]
) -> list[Candidate]:
    """The pod's launch candidates in the order they are tried: subnets first, then instance types.

    A pod of several markets (``spot-or-on-demand``) tries every one as Spot before any as
    on-demand (:func:`vkec2.domain.spot.markets`); only the first market's first candidate keeps
    the pod's own ClientToken.
    """
    out: list[Candidate] = []
    kinds = markets(params.capacity_type)
    for market in kinds:
        for instance_type in (params.instance_type, *params.fallback_types):
            for subnet in (params.subnet_id, *params.fallback_subnets):
                own = instance_type == params.instance_type and subnet == params.subnet_id
                launch = replace(
                    params,
                    instance_type=instance_type,
                    subnet_id=subnet,
                    user_data=params.user_data if own else user_data_for(settings, instance_type),
                    fallback_types=(),
                    fallback_subnets=(),
                    capacity_type=market,
                )
                own = own and market == kinds[0]
                token = client_token(uid, attempt) if own else client_token(uid, attempt, _variant(launch))
                zone = (zones.get(subnet) or subnet) if subnet else ANY_ZONE
                out.append(Candidate(launch, zone, token))
    return out


def settle_conditions(
    previous: Sequence[Mapping[str, Any]], stated: Sequence[dict[str, Any]], instance_id: str = ""
) -> list[dict[str, Any]]:
    """``stated``, plus ``vkec2.io/QuotaExceeded`` turned False when it was True and is not restated,
    and the Spot notice kept while the pod keeps its instance (``instance_id``), else False.

    The producer merges conditions by type, so a condition the fleet once set True stays until it
    is written False.
    """
    kinds = {c.get("type") for c in stated}
    was_true = any(c.get("type") == QUOTA_EXCEEDED and c.get("status") == "True" for c in previous)
    settled = list(stated) + settle_notice(previous, kinds, instance_id)
    if was_true and QUOTA_EXCEEDED not in kinds:
        return [*settled, condition(QUOTA_EXCEEDED, False, "QuotaAvailable", "")]
    return settled


class HostLaunch(Protocol):
    """The launch on a Dedicated Host (:class:`vkec2.fleet.placement.HostPlacement`) of host-pool pods."""

    def sent(self, rec: PodRecord) -> bool: ...

    def waits(self, outcome: NoCapacity) -> bool: ...

    def launch(
        self,
        lock: PodLock,
        rec: PodRecord,
        params: LaunchParams,
        tags: Mapping[str, str],
        intent: Callable[[str], None],
    ) -> Instance | NoCapacity: ...

    def verdict(self, rec: PodRecord, outcome: NoCapacity, at: float | None = None) -> Verdict: ...


class CapacityLaunch:
    """Launches a pod's instance on the first candidate with capacity; remembers which had none."""

    def __init__(
        self,
        settings: Settings,
        marks: OfferingMarks,
        ec2: Ec2,
        trust: Callable[[str], AgentTrust] | None = None,
        hosts: HostLaunch | None = None,
    ) -> None:
        self.settings = settings
        self.marks = marks
        self.ec2 = ec2
        self.trust = trust  # a TLS fleet's bootstrap trust for the user data of a ClientToken
        self.hosts = hosts  # pods of a host pool launch on its Dedicated Hosts (vkec2.fleet.placement)

    def _sent_params(self, cand: Candidate) -> LaunchParams:
        """The candidate's parameters with the user data of its ClientToken (same token, same data)."""
        if self.trust is None:
            return cand.params
        data = user_data_for(self.settings, cand.params.instance_type, self.trust(cand.token))
        return replace(cand.params, user_data=data)

    def candidates(self, rec: PodRecord, params: LaunchParams) -> list[Candidate]:
        """The pod's launch candidates of this attempt, in order, with their subnets' zones."""
        subnets = [s for s in (params.subnet_id, *params.fallback_subnets) if s]
        zones = self.ec2.subnet_zones(subnets) if subnets else {}
        return candidates(self.settings, params, rec.uid, rec.attempt, zones)

    def marks_of(self, cands: Sequence[Candidate]) -> dict[tuple[str, str], dict[str, Any]]:
        """The fleet's "unavailable" marks that concern ``cands`` (their offerings, their regions)."""
        return self.marks.unavailable([*(c.offering for c in cands), *{_regional(c) for c in cands}])

    def refused(self, cand: Candidate, exc: Ec2Error) -> tuple[tuple[str, str], dict[str, Any]]:
        """Mark what a capacity refusal of ``cand`` says is unavailable (a quota: the type in the
        whole region); returns the key and the mark."""
        mark = {"code": exc.code or "", "message": _aws_message(exc), "at": now()}
        key = _regional(cand) if exc.code in QUOTA_ERROR_CODES else cand.offering
        self.marks.mark_unavailable(key[0], key[1], mark, self.settings.ec2.unavailable_ttl_seconds)
        log.info("no capacity for %s: %s (%s)", cand.label, exc.code, mark["message"])
        return key, mark

    def sent(self, rec: PodRecord, params: LaunchParams) -> bool:
        """Whether a RunInstances of this attempt was sent: the record names one of its tokens."""
        if params.host_pool and self.hosts is not None:
            return self.hosts.sent(rec)
        if not rec.launch_token:
            return False
        return any(
            c.token == rec.launch_token for c in candidates(self.settings, params, rec.uid, rec.attempt, {})
        )

    def launch(
        self,
        lock: PodLock,
        rec: PodRecord,
        params: LaunchParams,
        tags: Mapping[str, str],
        intent: Callable[[str], None],
    ) -> Instance | NoCapacity:
        """RunInstances on the first candidate not marked unavailable that has capacity.

        ``intent(token)`` records the launch intent before each RunInstances (and checks the lock,
        raising :class:`~vkec2.errors.StaleFence` when it is lost); ``intent("")`` clears it after a
        capacity refusal, which launched nothing. The candidate whose token the
        record already names (``rec.launch_token``: a step stopped after sending it) goes first,
        so a re-sent RunInstances returns that launch's instance. Other EC2 errors propagate.
        """
        if params.host_pool and self.hosts is not None:
            return self.hosts.launch(lock, rec, params, tags, intent)
        cands = self.candidates(rec, params)
        cands.sort(key=lambda c: c.token != rec.launch_token)  # stable: the recorded one first
        marks = self.marks_of(cands)
        unavailable: list[str] = []
        last: Mapping[str, Any] | None = None
        launches = 0
        for cand in cands:
            mark = marked(cand, marks)
            if mark is None and launches >= RUN_INSTANCES_PER_STEP:
                assert last is not None  # the budget is only spent on refusals
                return self._outcome(last, unavailable, marks, untried=True)
            if mark is None or cand.token == rec.launch_token:
                intent(cand.token)
                launches += 1
                try:
                    return self.ec2.run_instance(self._sent_params(cand), tags, cand.token)
                except Ec2Error as exc:
                    if not exc.capacity:
                        raise
                    intent("")  # refused: nothing was launched under that token
                    key, mark = self.refused(cand, exc)
                    marks[key] = mark
            unavailable.append(cand.label)
            if last is None or float(mark.get("at", 0)) >= float(last.get("at", 0)):
                last = mark
        assert last is not None  # every candidate was refused or marked
        return self._outcome(last, unavailable, marks)

    @staticmethod
    def _outcome(
        last: Mapping[str, Any],
        unavailable: list[str],
        marks: Mapping[tuple[str, str], Mapping[str, Any]],
        *,
        untried: bool = False,
    ) -> NoCapacity:
        quota = any(m.get("code") in QUOTA_ERROR_CODES for m in marks.values())
        return NoCapacity(
            code=str(last.get("code", "")),
            message=str(last.get("message", "")),
            unavailable=tuple(unavailable),
            untried=untried,
            quota=quota,
        )

    def verdict(self, rec: PodRecord, outcome: NoCapacity, at: float | None = None) -> Verdict:
        """Pending (wait, poll again) within the deadline; Failed with AWS's answer after it."""
        if self.hosts is not None and self.hosts.waits(outcome):
            return self.hosts.verdict(rec, outcome, at)
        at = now() if at is None else at
        waiting = rec.phase is Phase.PENDING and rec.reason in WAIT_REASONS and rec.capacity_since > 0
        since = rec.capacity_since if waiting else at
        limit = self.settings.ec2.capacity_deadline_seconds
        tried = ", ".join(outcome.unavailable)
        quota = (condition(QUOTA_EXCEEDED, True, outcome.code, outcome.message, at),) if outcome.quota else ()
        if at - since >= limit and not outcome.untried:
            return Verdict(
                Phase.FAILED,
                reason=outcome.code or REASON_INSUFFICIENT_CAPACITY,
                message=f"{outcome.aws} (no capacity within {limit:.0f}s; tried {tried})",
                delay=None,
                write=True,
                conditions=quota,
            )
        reason = REASON_QUOTA_EXCEEDED if outcome.quota else REASON_INSUFFICIENT_CAPACITY
        message = f"{outcome.aws}; unavailable: {tried}; waiting until {rfc3339(since + limit)}"
        if outcome.untried:
            delay = NEXT_CANDIDATE_SECONDS
        else:
            ceiling = self.settings.celery.max_countdown_seconds
            delay = min(ceiling, CAPACITY_POLL_SECONDS + (at - since) / 10, max(1.0, since + limit - at))
        unchanged = waiting and (rec.reason, rec.message) == (reason, message)
        return Verdict(
            Phase.PENDING,
            reason=reason,
            message=message,
            delay=delay,
            write=not unchanged,
            fields={"capacity_since": since},
            conditions=quota,
        )


def marked(cand: Candidate, marks: Mapping[tuple[str, str], Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The mark that makes ``cand`` unavailable now (its type's quota in the region, or its offering)."""
    return marks.get(_regional(cand)) or marks.get(cand.offering)


def _regional(cand: Candidate) -> tuple[str, str]:
    """The key of a quota mark for the candidate's type: the whole region, Spot and on-demand apart."""
    return (cand.params.instance_type, offering_zone(REGION_WIDE, cand.params.capacity_type))


def _aws_message(exc: Ec2Error) -> str:
    """AWS's own message of a capacity error (the gateway prefixes it with the action and code)."""
    prefix = f"RunInstances: {exc.code}: "
    return exc.message[len(prefix) :] if exc.message.startswith(prefix) else exc.message
