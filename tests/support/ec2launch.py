"""The EC2 double's RunInstances rules: capacity windows and pools, instance counts, idempotency keys.

:class:`Launches` decides, before moto is asked, what a RunInstances would get on AWS: refused by a
:class:`~tests.support.awslike.CapacityRule` (its code and AWS's message), or launched with how many
instances. AWS launches as many instances as it can, at least ``MinCount`` and at most ``MaxCount``,
or none (RunInstances API reference: for ``MinCount`` more than EC2 can provide "Amazon EC2 does not
launch any instances"; for ``MaxCount``, it "launches the largest possible number of instances above
the specified minimum count"): a rule with ``available`` is a pool of instances its matching
launches draw from while the rule is active, so a request with ``MinCount`` at most what is left
launches what is left (capped at ``MaxCount``) and one whose ``MinCount`` exceeds it fails whole
with the rule's code. moto launches ``MinCount`` instances (not as many as it can up to
``MaxCount``), so the double forwards ``MinCount`` = ``MaxCount`` = the count decided: ``MaxCount``
when no pool limits the launch, as AWS with capacity to spare. :func:`fingerprint` is the key of a
ClientToken's parameters (every form parameter but the token, so another ``MinCount``/``MaxCount``
is a mismatch). Not modelled: capacity that comes back when instances terminate, pools shared
between rules, and partial fulfilment for any reason other than a pool (vCPU quotas, Spot prices).
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass

from tests.support import ec2wire as wire
from tests.support.awslike import ON_DEMAND_MARKET, SPOT_MARKET, CapacityRule, capacity_message


def fingerprint(params: wire.Params) -> str:
    """What a ClientToken's replay must repeat: every parameter but the token itself."""
    return hashlib.sha256(
        repr(sorted((k, v) for k, v in params.items() if k != "ClientToken")).encode()
    ).hexdigest()


def counts(params: wire.Params) -> tuple[int, int]:
    """A RunInstances' ``(MinCount, MaxCount)`` (1 each when absent or not a number)."""

    def number(key: str) -> int:
        try:
            return int(wire.first(params, key, "1"))
        except ValueError:
            return 1

    return number("MinCount"), number("MaxCount")


def with_count(params: wire.Params, count: int) -> wire.Params:
    """``params`` asking for exactly ``count`` instances (``MinCount`` = ``MaxCount`` = ``count``)."""
    return {**params, "MinCount": [str(count)], "MaxCount": [str(count)]}


def market(params: wire.Params) -> str:
    spot = wire.first(params, "InstanceMarketOptions.MarketType") == SPOT_MARKET
    return SPOT_MARKET if spot else ON_DEMAND_MARKET


@dataclass
class _Window:
    rule: CapacityRule
    since: float
    used: int = 0  # instances its pool gave out (rules with ``available``)


@dataclass(frozen=True)
class Verdict:
    """What a RunInstances gets: ``refusal`` (code, message) or ``count`` instances to launch."""

    count: int
    refusal: tuple[str, str] | None = None
    pools: tuple[_Window, ...] = ()


class Launches:
    """The capacity rules given to the double, each with its window start and what its pool gave."""

    def __init__(self, seed: int = 1) -> None:
        self._windows: list[_Window] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def reset(self, rules: tuple[CapacityRule, ...], now: float) -> None:
        with self._lock:
            self._windows = [_Window(rule, now) for rule in rules]

    def add(self, rule: CapacityRule, now: float) -> None:
        with self._lock:
            self._windows.append(_Window(rule, now))

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._windows

    def decide(self, params: wire.Params, zone: str, now: float) -> Verdict:
        """The verdict for a RunInstances in ``zone`` (its subnet's, or its placement's) at ``now``."""
        low, high = counts(params)
        instance_type = wire.first(params, "InstanceType", "m1.small")
        subnet = wire.first(params, "SubnetId") or wire.first(params, "NetworkInterface.1.SubnetId")
        kind = market(params)
        count, pools = high, []
        with self._lock:
            for window in self._windows:
                rule = window.rule
                if not (rule.active(now - window.since) and rule.matches(instance_type, subnet, zone, kind)):
                    continue
                if rule.available is not None:
                    pools.append(window)
                    count = min(count, max(0, rule.available - window.used))
                elif rule.fraction >= 1 or self._random.random() < rule.fraction:
                    return Verdict(0, (rule.code, capacity_message(rule.code, instance_type, zone)))
            if pools and count < low:
                code = pools[0].rule.code
                return Verdict(0, (code, capacity_message(code, instance_type, zone)))
        return Verdict(count, None, tuple(pools))

    def consume(self, verdict: Verdict, launched: int) -> None:
        """Count ``launched`` instances against the pools the verdict drew from."""
        with self._lock:
            for window in verdict.pools:
                window.used += launched
