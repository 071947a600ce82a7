"""Warm pools: named sets of pre-launched instances whose agents already answer, ready to be claimed by pods.

A pool's truth lives in EC2 tags (``vkec2.io/pool`` = name, ``vkec2.io/pool-state`` = Provisioning,
Ready, Claimed or Unhealthy; instances are tagged at launch) and is mirrored in Redis: the
``pool:{name}:instances`` hash holds every unclaimed member's description and ``pool:{name}:ready``
the IDs a pod may take with the atomic :meth:`~vkec2.store.Store.claim_ready`. Ready means the agent
answers its grpc.health check, not merely "EC2 running"; in a TLS fleet a member is bootstrapped to
mTLS (its CSR checked and signed, :mod:`vkec2.agent_client.bootstrap`) as it joins, so no member
waits in the pool in bootstrap mode and a claim finds it already authenticated. Its user data
carries the bootstrap trust of its own ClientToken. :meth:`WarmPools.reconcile` (the body of
``vkec2.maintenance.warm_pools``) lists the cluster's instances once for all pools, checks the
members' agents, retags the ones whose state changed (one CreateTags per state), launches the
deficit (one RunInstances per slot, each slot with its own ClientToken, subnet chosen at random) and
terminates the surplus in one call, unhealthy members first, then the newest. Because the mirror
is rebuilt from tags on every pass, a restart or a lost Redis loses nothing: the slot counter is
raised past the highest slot in the members' ClientTokens (a reused token would return an old,
maybe terminated instance), and the surplus is terminated only while every node has relisted its
pods since Redis's epoch (:mod:`vkec2.fleet.epochgate`; until then a member a pod claimed just
before the loss may look unclaimed). A claimed instance
leaves the mirror before its pod's tags are written; ``pool:{name}:known`` remembers what was put
in the ready set so such an instance is not mistaken for a lost one and offered twice (an abandoned
claim, still untagged after ``CLAIM_GRACE_SECONDS``, is terminated as unhealthy).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vkec2.config import Settings, WarmPool
from vkec2.contract import (
    POOL_CLAIMED,
    POOL_PROVISIONING,
    POOL_READY,
    POOL_UNHEALTHY,
    SPOT,
    TAG_CLUSTER,
    TAG_POD_UID,
    TAG_POOL,
    TAG_POOL_STATE,
)
from vkec2.domain.agents import AgentTarget, AgentTrust, resolve_endpoint
from vkec2.domain.instances import Instance, pool_slot, pool_token, tag_map
from vkec2.domain.launchopts import options_for
from vkec2.domain.podspec import LaunchParams, user_data_for
from vkec2.domain.spot import markets
from vkec2.domain.times import parse_rfc3339
from vkec2.errors import AgentError, Ec2Error, Vkec2Error
from vkec2.fleet.epochgate import read_gate
from vkec2.ports import Agents, Ec2
from vkec2.store.redis_store import Store

log = logging.getLogger("vkec2.fleet.warmpool")

CLAIM_GRACE_SECONDS = 120.0
#: A member just launched may be missing from a DescribeInstances for a little while.
LAUNCH_VISIBILITY_SECONDS = 120.0


def launch_time(instance: Instance) -> float:
    raw = instance.get("LaunchTime")
    if isinstance(raw, datetime):
        return raw.timestamp()
    if isinstance(raw, str) and raw:
        return parse_rfc3339(raw) or 0.0
    return 0.0


def with_state_tag(instance: Instance, state: str) -> Instance:
    tags = {**tag_map(instance), TAG_POOL_STATE: state}
    return {**instance, "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}


@dataclass
class PoolReport:
    pool: str
    desired: int = 0
    ready: int = 0
    provisioning: int = 0
    launched: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    retagged: int = 0
    skipped: bool = False
    error: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "desired": self.desired,
            "ready": self.ready,
            "provisioning": self.provisioning,
            "launched": len(self.launched),
            "terminated": len(self.terminated),
            "retagged": self.retagged,
            "skipped": self.skipped,
            "error": self.error,
        }


def pool_counts(store: Store, pool: str) -> dict[str, int]:
    """Unclaimed members of ``pool`` by state: Ready when in the ready set, else their state tag."""
    members = store.pool_members(pool)
    ready = store.pool_ready(pool)
    out = dict.fromkeys((POOL_PROVISIONING, POOL_READY, POOL_UNHEALTHY), 0)
    for iid, doc in members.items():
        tagged = tag_map(doc).get(TAG_POOL_STATE, POOL_PROVISIONING)
        state = POOL_READY if iid in ready else (POOL_PROVISIONING if tagged == POOL_READY else tagged)
        out[state] = out.get(state, 0) + 1
    return out


class WarmPools:
    """Reconciles the configured warm pools of one cluster."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ec2: Ec2,
        agents: Agents,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        bootstrap: Callable[[AgentTarget, str], None] | None = None,
        trust: Callable[[str], AgentTrust] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self.agents = agents
        self.clock = clock
        self.rng = rng or random.Random()
        self.bootstrap = bootstrap  # (target, ClientToken): a TLS fleet's bootstrap to mTLS
        self.trust = trust  # a TLS fleet's bootstrap trust for the user data of a ClientToken

    # -- reading the mirror ---------------------------------------------------------------

    def counts(self, pool: str) -> dict[str, int]:
        """Members of ``pool`` by state, from the Redis mirror (for the status log)."""
        return pool_counts(self.store, pool)

    # -- reconcile ------------------------------------------------------------------------

    def reconcile_all(self, only: str | None = None) -> list[PoolReport]:
        pools = [p for p in self.settings.warm_pools if only is None or p.name == only]
        if not pools:
            return []
        live = self.ec2.cluster_instances()
        return [self.reconcile(pool, live) for pool in pools]

    def reconcile(self, pool: WarmPool, live: Sequence[Instance]) -> PoolReport:
        report = PoolReport(pool.name, desired=pool.desired_count)
        with self.store.pool_reconcile_flight(pool.name, 120_000) as held:
            if not held:
                report.skipped = True
                return report
            try:
                self._reconcile(pool, live, report)
            except Vkec2Error as exc:
                report.error = exc.message
                raise
        return report

    def _boot_timeout(self, instance: Instance) -> float:
        return self.settings.agent.boot_timeout_for(str(instance.get("InstanceType", "")))

    def _serving(self, instance: Instance) -> bool:
        """Whether the member's agent serves (bootstrapped to mTLS first in a TLS fleet)."""
        try:
            endpoint = resolve_endpoint(self.settings.agent, instance)
            target = AgentTarget(endpoint=endpoint, instance_id=instance["InstanceId"])
            if not self.agents.serving(target):
                return False
            if self.bootstrap is not None:
                self.bootstrap(target, str(instance.get("ClientToken") or ""))
            return True
        except AgentError as exc:
            if self.bootstrap is not None and not exc.retryable:
                log.warning("warm pool member %s not ready: %s", instance.get("InstanceId"), exc.message)
            return False

    def _scope(self, pool: str) -> str:
        """The part of a pool's ClientTokens that names the cluster and the pool."""
        return hashlib.sha256(f"{self.settings.cluster_name}/{pool}".encode()).hexdigest()[:24]

    def _reconcile(self, pool: WarmPool, live: Sequence[Instance], report: PoolReport) -> None:
        store = self.store
        now = self.clock()
        scope = self._scope(pool.name)
        slots = [pool_slot(scope, str(i.get("ClientToken") or "")) for i in live]
        store.pool_slot_floor(pool.name, max((s for s in slots if s is not None), default=0))
        mirror = store.pool_members(pool.name)
        ready = store.pool_ready(pool.name)
        known = store.pool_offered(pool.name)
        members: dict[str, Instance] = {}
        for inst in live:
            tags = tag_map(inst)
            if tags.get(TAG_POOL) != pool.name or tags.get(TAG_POD_UID):
                continue
            if tags.get(TAG_POOL_STATE) == POOL_CLAIMED:
                continue
            members[inst["InstanceId"]] = inst
        # What each member is now.
        state: dict[str, str] = {}
        running = [i for iid, i in members.items() if i.get("State", {}).get("Name") == "running"]
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(running)))) as pool_exec:
            serving = dict(
                zip([i["InstanceId"] for i in running], pool_exec.map(self._serving, running), strict=True)
            )
        for iid, inst in members.items():
            ec2_state = inst.get("State", {}).get("Name", "pending")
            if iid in known and iid not in mirror:
                # Claimed by a pod whose tags are not written yet; abandoned if that takes too long.
                if now - known[iid] < CLAIM_GRACE_SECONDS:
                    continue
                state[iid] = POOL_UNHEALTHY
            elif ec2_state == "pending":
                state[iid] = POOL_PROVISIONING
            elif ec2_state != "running":
                state[iid] = POOL_UNHEALTHY
            elif serving.get(iid):
                state[iid] = POOL_READY
            elif iid in ready or now - launch_time(inst) > self._boot_timeout(inst):
                state[iid] = POOL_UNHEALTHY  # a Ready agent that stopped answering, or one that never booted
            else:
                state[iid] = POOL_PROVISIONING
        # Mirror entries that are no longer members: claimed and tagged, or gone from EC2.
        for iid, doc in mirror.items():
            if iid in members:
                continue
            if now - launch_time(doc) < LAUNCH_VISIBILITY_SECONDS and iid not in ready:
                state.setdefault(iid, POOL_PROVISIONING)  # just launched, not visible yet
                members[iid] = doc
                continue
            self._forget(pool.name, [iid])
        for iid in known:
            if iid not in members and iid not in mirror:
                store.pool_forget_offer(pool.name, iid)
        # Write the mirror and the tags.
        for iid, new in state.items():
            inst = members[iid]
            if new == POOL_READY:
                if iid not in ready:
                    store.pool_offer(pool.name, iid, with_state_tag(inst, POOL_READY), now)
            elif new == POOL_PROVISIONING:
                store.pool_put(pool.name, iid, with_state_tag(inst, POOL_PROVISIONING))
            elif new == POOL_UNHEALTHY and iid in ready and not store.pool_withdraw(pool.name, iid):
                state.pop(iid)  # claimed meanwhile: the pod owns it now
        by_state: dict[str, list[str]] = {}
        for iid, new in state.items():
            if tag_map(members[iid]).get(TAG_POOL_STATE) != new and iid in {i["InstanceId"] for i in live}:
                by_state.setdefault(new, []).append(iid)
        for new, ids in sorted(by_state.items()):
            self.ec2.create_tags(ids, {TAG_POOL_STATE: new})
            report.retagged += len(ids)
        # Size: launch the deficit, terminate the surplus (unhealthy first, then the newest).
        unhealthy = [iid for iid, s in state.items() if s == POOL_UNHEALTHY]
        healthy = sorted(
            (iid for iid, s in state.items() if s in (POOL_READY, POOL_PROVISIONING)),
            key=lambda iid: (state[iid] == POOL_READY, -launch_time(members[iid])),
        )
        surplus = max(0, len(healthy) - pool.desired_count)
        gate = read_gate(store) if surplus else None
        if gate is not None and not gate.open:
            log.info("warm pool %s: %d surplus member(s) kept: %s", pool.name, surplus, gate.reason)
            surplus = 0
        doomed = list(unhealthy)
        for iid in healthy:
            if surplus == 0:
                break
            if state[iid] == POOL_READY and not store.pool_withdraw(pool.name, iid):
                continue  # claimed meanwhile
            doomed.append(iid)
            surplus -= 1
        if doomed:
            self._forget(pool.name, doomed)
            self.ec2.terminate(doomed)
            report.terminated = doomed
        kept = [iid for iid in healthy if iid not in doomed]
        report.ready = sum(1 for iid in kept if state[iid] == POOL_READY)
        report.provisioning = len(kept) - report.ready
        for _ in range(max(0, pool.desired_count - len(kept))):
            inst = self._launch(pool)
            store.pool_put(pool.name, inst["InstanceId"], with_state_tag(inst, POOL_PROVISIONING))
            report.launched.append(inst["InstanceId"])
            report.provisioning += 1
        if report.launched or report.terminated:
            log.info("warm pool %s: %s", pool.name, report.summary())

    def _forget(self, pool: str, ids: list[str]) -> None:
        self.store.pool_forget(pool, ids)

    def _launch(self, pool: WarmPool) -> Instance:
        defaults = self.settings.pool_launch_defaults(pool)
        if defaults.image_id is None and defaults.launch_template is None:
            raise Vkec2Error(
                f"warm pool {pool.name}: no image_id (set it on the pool or in ec2)", reason="MissingImage"
            )
        slot = self.store.pool_next_slot(pool.name)
        tags = {
            TAG_CLUSTER: self.settings.cluster_name,
            TAG_POOL: pool.name,
            TAG_POOL_STATE: POOL_PROVISIONING,
            "Name": f"warm-pool/{pool.name}",
        }
        token = pool_token(self._scope(pool.name), slot)
        # Capacity fallback, as for pods: the pool's subnets (from a random one), then its
        # alternative instance types; each candidate has its own ClientToken.
        first = "" if defaults.type_from_template() else defaults.instance_type  # "": the template's
        types = list(dict.fromkeys([first, *defaults.instance_types]))
        subnets: list[str | None] = list(defaults.subnets) or [None]
        start = self.rng.randrange(len(subnets))
        subnets = subnets[start:] + subnets[:start]
        refused: Ec2Error | None = None
        # A Spot pool tries every one as Spot first (spot-or-on-demand: then as on-demand).
        kinds = markets(defaults.capacity_type)
        for n, (market, instance_type, subnet) in enumerate(
            (m, t, s) for m in kinds for t in types for s in subnets
        ):
            key = f"{instance_type}/{subnet or ''}" + (f"/{SPOT}" if market == SPOT else "")
            variant = hashlib.sha256(key.encode()).hexdigest()[:8]
            sent_token = token if n == 0 else f"{token}-{variant}"
            trust = self.trust(sent_token) if self.trust is not None else None
            params = LaunchParams(
                image_id=defaults.image_id or "",
                instance_type=instance_type,
                subnet_id=subnet,
                security_groups=tuple(sorted(defaults.security_groups)),
                instance_profile=defaults.instance_profile,
                key_pair=defaults.key_pair,
                user_data=user_data_for(self.settings, instance_type, trust),
                tags=tuple(sorted(defaults.tags.items())),
                warm_pool=pool.name,
                launch=options_for(defaults),
                capacity_type=market,
                spot_max_price=defaults.spot_max_price,
            )
            try:
                return self.ec2.run_instance(params, tags, sent_token)
            except Ec2Error as exc:
                if not exc.capacity:
                    raise
                refused = exc
                log.info(
                    "warm pool %s: no capacity for %s in %s: %s", pool.name, instance_type, subnet, exc.code
                )
        assert refused is not None
        raise refused
