"""The simulator's view of EC2: which instances are running, and since when, from bulk DescribeInstances.

A virtual agent (:mod:`agent.sim.simulator`) exists only for an instance that is ``running`` at the
configured EC2 endpoint (moto's server locally). :class:`Ec2Inventory` keeps that set with
paginated DescribeInstanceStatus listings of the running instances in the background every
``refresh_interval`` seconds (the lightest listing: moto renders a whole description per instance
in a DescribeInstances answer, which at a thousand instances takes it tens of seconds), and looks a
missed instance up by its ID (DescribeInstances filtered on ``instance-id``, at most once per
``miss_refresh`` seconds per instance), so thousands of instances cost a handful of EC2 calls, and
a new one costs one small call, not a listing of all. An instance's launch time comes from its
lookup; one only ever seen in a listing counts from when it was first seen. boto3 is imported
here, lazily, and nowhere else in the agent package.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vkec2.agent.simulator")


class Ec2Inventory:
    """Which instances are running at the EC2 endpoint, with their launch times; refreshed in bulk."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        refresh_interval: float = 5.0,
        miss_refresh: float = 1.0,
        on_refresh: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._region = region
        self._refresh_interval = refresh_interval
        self._miss_refresh = miss_refresh
        self._on_refresh = on_refresh
        self._running: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        self._refreshed_at = float("-inf")
        self._missed: dict[str, float] = {}  # instance ID -> when it was last looked up on a miss
        self._flight = threading.Lock()
        self._client: Any = None
        self._stop = threading.Event()
        self.describe_calls = 0

    def _ec2(self) -> Any:
        if self._client is None:
            import boto3  # only the simulator needs it; the agent itself never does
            from botocore.config import Config

            self._client = boto3.client(
                "ec2",
                endpoint_url=self._endpoint,
                region_name=self._region,
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=4,
                    connect_timeout=2,
                    read_timeout=60,
                ),
            )
        return self._client

    def refresh(self) -> None:
        with self._flight:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        started = time.monotonic()
        running: dict[str, float] = {}
        now = time.time()
        paginator = self._ec2().get_paginator("describe_instance_status")
        for page in paginator.paginate(IncludeAllInstances=False, PaginationConfig={"PageSize": 1000}):
            self.describe_calls += 1
            for status in page.get("InstanceStatuses", []):
                if status.get("InstanceState", {}).get("Name") != "running":
                    continue
                iid = status["InstanceId"]
                first = self._first_seen.setdefault(iid, now)
                running[iid] = self._running.get(iid, first)
        self._running = running
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in running}
        self._refreshed_at = time.monotonic()
        log.debug("EC2 inventory: %d running instances (%.2fs)", len(running), self._refreshed_at - started)
        if self._on_refresh is not None:
            self._on_refresh(set(running))

    def _look_up(self, instance_id: str) -> None:
        """Describe one instance by ID and remember it when it is running."""
        self.describe_calls += 1
        answer = self._ec2().describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
        for reservation in answer.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                if inst.get("State", {}).get("Name") == "running":
                    launch = inst.get("LaunchTime")
                    first = self._first_seen.setdefault(instance_id, time.time())
                    self._running[instance_id] = launch.timestamp() if launch is not None else first

    def launch_time(self, instance_id: str) -> float | None:
        """When the instance was launched, or None when it is not running (looked up on a miss)."""
        found = self._running.get(instance_id)
        if found is not None:
            return found
        now = time.monotonic()
        with self._flight:
            if now - self._missed.get(instance_id, float("-inf")) < self._miss_refresh:
                return self._running.get(instance_id)
            self._missed[instance_id] = now
            if len(self._missed) > 10_000:  # forget old misses
                self._missed = {k: v for k, v in self._missed.items() if now - v < self._miss_refresh}
        try:
            self._look_up(instance_id)
        except Exception as exc:
            log.warning("DescribeInstances of %s failed: %s", instance_id, exc)
        return self._running.get(instance_id)

    def user_data(self, instance_id: str) -> str:
        """The instance's UserData (decoded; "" when it has none): one DescribeInstanceAttribute."""
        import base64

        answer = self._ec2().describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        raw = (answer.get("UserData") or {}).get("Value") or ""
        return base64.b64decode(raw).decode(errors="replace") if raw else ""

    def count(self) -> int:
        return len(self._running)

    def run_background(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self._refresh_interval):
                try:
                    self.refresh()
                except Exception as exc:
                    log.warning("DescribeInstances failed: %s", exc)

        threading.Thread(target=loop, name="vkec2-sim-inventory", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
