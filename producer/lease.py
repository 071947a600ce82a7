"""The node lease and the producer's own health: renew only while the node can really run pods.

Like the kubelet, the producer proves the node alive with a coordination.k8s.io/v1 Lease named
after the node in ``kube-node-lease`` (40 s duration, renewed every 10 s with jitter, owned by
the Node so it goes with it). Unlike a kubelet, the producer alone cannot run a pod: the
:class:`HealthProbe` checks that Redis answers, that at least one Celery worker answers a ping,
and that the node's status outbox consumer is moving (``OutboxStalled`` means the consumer stands
still — its loop silent, or entries unread or unsettled — never that one pod's status is refused:
see :mod:`producer.outbox`). While any of that is missing the lease is
not renewed and the node reports Ready=False with a reason naming what is missing
(``RedisUnreachable``, ``NoWorkers``, ``OutboxStalled``). :class:`Heartbeat` runs that loop,
refreshes the node status (on change, or every ``status_interval``) and checks the Redis epoch
(:mod:`producer.epoch`: a changed epoch means Redis lost its data, and the pods are relisted).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from celery import Celery

from producer.epoch import EpochWatch
from producer.kube import Kube, KubeError, Obj
from producer.node import FleetSignals, Health, NodeKeeper
from vkec2.domain.times import rfc3339
from vkec2.fleet.breaker import fleet_signals
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"


class HealthProbe:
    """Is this producer able to run pods right now?"""

    def __init__(
        self,
        store: Store,
        control_app: Celery,
        *,
        ping_timeout: float = 1.0,
        outbox_stalled: Callable[[], str | None] | None = None,
    ) -> None:
        self.store = store
        self.app = control_app
        self.ping_timeout = ping_timeout
        self.outbox_stalled = outbox_stalled
        self.workers: list[str] = []

    def check(self) -> Health:
        try:
            self.store.ping()
        except Exception as exc:
            return Health(False, "RedisUnreachable", f"Redis does not answer: {exc}")
        try:
            # The first answer is enough (limit=1): the ping then costs a round trip, not the timeout.
            replies = cast(
                list[dict[str, Any]], self.app.control.ping(timeout=self.ping_timeout, limit=1) or []
            )
        except Exception as exc:
            return Health(False, "RedisUnreachable", f"cannot reach the Celery broker: {exc}")
        self.workers = sorted(name for reply in replies for name in reply)
        if not self.workers:
            return Health(
                False, "NoWorkers", f"no Celery worker answered a ping within {self.ping_timeout:g}s"
            )
        if self.outbox_stalled is not None:
            stalled = self.outbox_stalled()
            if stalled:
                return Health(False, "OutboxStalled", stalled)
        return Health(
            True,
            "ProducerReady",
            "vkec2 producer is ready: Redis answers, workers answer, status events are applied",
        )


class LeaseKeeper:
    """Creates and renews the node's Lease."""

    def __init__(self, kube: Kube, node: str, duration: int = 40) -> None:
        self.kube = kube
        self.node = node
        self.duration = duration
        self.node_uid = ""
        self.renewals = 0
        self._lease: Obj | None = None

    def _owner(self) -> list[dict[str, Any]]:
        if not self.node_uid:
            return []
        return [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}]

    def renew(self) -> None:
        """Set renewTime to now (creating the lease if needed); retries once on a conflict."""
        for attempt in range(2):
            now = rfc3339(time.time(), digits=6)
            lease = self._lease if attempt == 0 else None
            if lease is None:
                lease = self.kube.get_lease(LEASE_NAMESPACE, self.node)
            try:
                if lease is None:
                    lease = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {
                            "name": self.node,
                            "namespace": LEASE_NAMESPACE,
                            "ownerReferences": self._owner(),
                        },
                        "spec": {
                            "holderIdentity": self.node,
                            "leaseDurationSeconds": self.duration,
                            "acquireTime": now,
                            "renewTime": now,
                        },
                    }
                    self._lease = self.kube.create_lease(lease)
                else:
                    lease = dict(
                        lease, spec=dict(lease.get("spec") or {}), metadata=dict(lease.get("metadata") or {})
                    )
                    lease["spec"].update(
                        holderIdentity=self.node, leaseDurationSeconds=self.duration, renewTime=now
                    )
                    if self._owner():
                        lease["metadata"]["ownerReferences"] = self._owner()
                    self._lease = self.kube.replace_lease(lease)
                self.renewals += 1
                return
            except KubeError as exc:
                self._lease = None
                if not (exc.conflict or exc.not_found) or attempt == 1:
                    raise


class Heartbeat:
    """Every lease interval (with jitter): check health, renew the lease if healthy, refresh the node."""

    def __init__(
        self,
        probe: HealthProbe,
        lease: LeaseKeeper,
        node: NodeKeeper,
        store: Store,
        *,
        interval: float = 10.0,
        jitter: float = 0.1,
        epoch: EpochWatch | None = None,
        beat_liveness_seconds: float = 60.0,
    ) -> None:
        self.epoch = epoch
        self.probe = probe
        self.lease = lease
        self.node = node
        self.store = store
        self.interval = interval
        self.jitter = jitter
        self.beat_liveness_seconds = beat_liveness_seconds
        self.health = Health(False, "Starting", "the producer is starting")
        self.beats = 0

    def beat(self) -> Health:
        health = self.probe.check()
        if self.epoch is not None and health.reason != "RedisUnreachable":
            try:
                self.epoch.check()  # Redis lost its data: relist and rebuild the records
            except Exception as exc:
                log.warning("node %s: cannot read the Redis epoch: %s", self.lease.node, exc)
        if health.ok:
            try:
                self.lease.renew()
            except KubeError as exc:
                log.warning("lease of node %s not renewed: %s", self.lease.node, exc)
        elif health != self.health:
            log.warning(
                "node %s not healthy, lease not renewed: %s: %s",
                self.lease.node,
                health.reason,
                health.message,
            )
        try:
            stored = self.store.capacity()
            records = self.store.records(self.node.cfg.name)
            quota = self.store.quota_exceeded()
            signals: FleetSignals | None = fleet_signals(self.store, self.beat_liveness_seconds)
        except Exception:
            stored, records, quota, signals = {}, [], {}, None
        try:
            self.node.sync_status(
                health, stored, records, force=health != self.health, quota=quota, signals=signals
            )
        except KubeError as exc:
            if exc.not_found:  # someone deleted the Node: register it again (the lease follows it)
                log.warning("node %s is gone; registering it again", self.node.cfg.name)
                node = self.node.register()
                self.lease.node_uid = str(node["metadata"]["uid"])
                self.node.sync_status(health, stored, records, force=True, quota=quota, signals=signals)
            else:
                log.warning("status of node %s not updated: %s", self.node.cfg.name, exc)
        self.health = health
        self.beats += 1
        return health

    def run(self, stop: threading.Event) -> None:
        """Beat every ``interval`` (+-jitter) measured start to start, however long a beat takes."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat of node %s failed", self.lease.node)
            period = self.interval * random.uniform(1 - self.jitter, 1 + self.jitter)
            stop.wait(max(0.0, started + period - time.monotonic()))
