"""A small world for the fleet's unit tests: settings, the fakes, a Lifecycle, and one pod to drive.

:class:`World` seeds the pod record in any phase and runs one lifecycle step under the pod's lock,
the way ``tasks/pods.py`` does, so a test reads like a row of the transition table: a starting
state, one call, then the phase, the reason and the side effects on EC2, the agents and the outbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.support.fakeagents import FakeAgents
from tests.support.fakes import FakeEc2, FakeStore
from vkec2.config import Settings
from vkec2.contract import TAG_POD_UID
from vkec2.domain.agents import AgentTarget
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase, PodRecord, StatusEvent
from vkec2.fleet.lifecycle import Lifecycle

UID = "5f0c2a8e-1b7d-4c3e-9a61-0d2b4e6f8a10"
NODE = "vk-unit"
IMAGE = "ami-0123456789abcdef0"
POOL = "warm-a"
AGENT_PORT = 7443
BOOT_TIMEOUT = 300.0
VISIBILITY = 60.0  # ec2.visibility_window_seconds


def settings(**overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "cluster_name": "unit",
        "max_attempts": 3,
        "ec2": {
            "image_id": IMAGE,
            "instance_type": "m5.large",
            "subnets": ["subnet-0a"],
            "visibility_window_seconds": VISIBILITY,
        },
        "agent": {"endpoint": "private-ip", "port": AGENT_PORT, "boot_timeout_seconds": BOOT_TIMEOUT},
        # What the tests' pods ask for by annotation beyond the configured parameters.
        "allowlists": {
            "default": {"images": ["ami-0fedcba9876543210"], "instance_types": ["c5.xlarge", "m5a.large"]}
        },
    }
    raw.update(overrides)
    return Settings.model_validate(raw)


def pod(
    *, uid: str = UID, restart_policy: str = "Always", annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": uid,
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "nodeName": NODE,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 7,
            "containers": [{"name": "main", "image": "nginx"}],
        },
    }


class World:
    """One pod, the fakes and the lifecycle under test."""

    def __init__(self, cfg: Settings) -> None:
        self.settings = cfg
        self.store = FakeStore(cfg.cluster_name)
        self.ec2 = FakeEc2(cfg.cluster_name)
        self.agents = FakeAgents()
        self.bootstraps: list[AgentTarget] = []
        self.lifecycle = Lifecycle(cfg, self.store, self.ec2, self.agents)

    def with_bootstrap(self, hook: Callable[[AgentTarget], None] | None = None) -> None:
        def bootstrap(target: AgentTarget, client_token: str) -> None:
            self.bootstraps.append(target)
            self.agents.calls.append(("bootstrap", target.instance_id))
            if hook is not None:
                hook(target)

        self.lifecycle.bootstrap = bootstrap

    # -- seeding -----------------------------------------------------------------------------

    def instance(self, state: str = "running", **kwargs: Any) -> Instance:
        """An instance tagged with the pod (as if launched for it) in ``state``."""
        tags = {TAG_POD_UID: UID, **kwargs.pop("tags", {})}
        return self.ec2.add(state=state, tags=tags, **kwargs)

    def seed(
        self,
        phase: Phase = Phase.PENDING,
        *,
        instance: Instance | None = None,
        spec: dict[str, Any] | None = None,
        **fields: Any,
    ) -> PodRecord:
        """The pod's record in ``phase``; with an instance, its ID, endpoint and a fresh launch time."""
        rec = PodRecord(uid=UID, namespace="default", name="web", node=NODE, spec=spec or pod(), phase=phase)
        rec.generation = 1
        if instance is not None:
            rec.instance = instance
            rec.instance_id = instance["InstanceId"]
            rec.launched_at = time.time()
            if phase not in (Phase.PENDING, Phase.PROVISIONING) and instance.get("PrivateIpAddress"):
                rec.endpoint = f"{instance['PrivateIpAddress']}:{AGENT_PORT}"
        for key, value in fields.items():
            setattr(rec, key, value)
        self.store.put(rec)
        return rec

    # -- acting, as tasks/pods.py does ---------------------------------------------------------

    def step(self) -> float | None:
        with self.store.locked(UID) as lock:
            rec = self.store.get(UID)
            assert rec is not None
            return self.lifecycle.create_step(lock, rec)

    def update(self) -> None:
        with self.store.locked(UID) as lock:
            rec = self.store.get(UID)
            assert rec is not None
            self.lifecycle.update(lock, rec)

    def delete(self, generation: int | None = None) -> float | None:
        """One delete step; the delay before the next, or None when the delete is done."""
        with self.store.locked(UID) as lock:
            rec = self.store.get(UID)
            assert rec is not None
            return self.lifecycle.delete(lock, rec, generation)

    def set(self, **fields: Any) -> None:
        """Change record fields behind the lifecycle's back (e.g. move a deadline into the past)."""
        self.store.hashes[UID].update(PodRecord.encode(fields))

    def replace(self, reason: str = "Unhealthy", message: str = "health checks failed") -> bool:
        with self.store.locked(UID) as lock:
            rec = self.store.get(UID)
            assert rec is not None
            return self.lifecycle.replace(lock, rec, reason, message)

    def fail(self, reason: str = "ImagePullBackOff", message: str = "cannot pull") -> None:
        with self.store.locked(UID) as lock:
            rec = self.store.get(UID)
            assert rec is not None
            self.lifecycle.fail(lock, rec, reason, message)

    # -- reading -----------------------------------------------------------------------------

    @property
    def rec(self) -> PodRecord:
        rec = self.store.get(UID)
        assert rec is not None
        return rec

    @property
    def events(self) -> list[StatusEvent]:
        return self.store.events(NODE)

    def phases(self) -> list[Phase]:
        """The phases reported to the producer, in order."""
        return [e.phase for e in self.events]
