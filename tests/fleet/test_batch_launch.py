"""Batched launches on a real Redis: one RunInstances per batch, and every guarantee of a single launch.

The lifecycle runs in-process on the fleet's real store (its Lua scripts) with the fake EC2 and
agents, one step at a time under each pod's real lock, as the tasks run it: pods that arrive within
the window share a RunInstances (``MaxCount`` = the batch), each gets its own instance in join
order, a re-sent batch (its sender died after the call) gets the same instances back, fewer
instances than asked send the unfilled pods to a new batch, a deleted member leaves or terminates
what it was given, a launch without tokens comes back later instead of waiting, a throttled
launch reserves its tokens again, and the pod tags follow without holding anyone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fakeagents import FakeAgents
from tests.support.fakes import FakeEc2
from tests.unit.fleet.world import pod, settings
from vkec2.config import Settings
from vkec2.contract import TAG_LAUNCH_BATCH, TAG_POD_UID
from vkec2.domain.instances import tag_map
from vkec2.domain.models import Phase, PodRecord
from vkec2.ec2.ratelimit import RateLimiter
from vkec2.errors import Ec2Error
from vkec2.fleet import batchlaunch
from vkec2.fleet.batchlaunch import BatchLaunch, batch_token
from vkec2.fleet.gc import is_orphan
from vkec2.fleet.lifecycle import Lifecycle
from vkec2.fleet.podtags import PodTags
from vkec2.store.redis_store import Store

NODE = "vk-unit"


class Batched:
    """A lifecycle with batched launches on a real store; ``step`` runs one create step of a pod."""

    def __init__(self, redis_url: str, **overrides: Any) -> None:
        cluster = f"b-{uuid.uuid4().hex[:8]}"
        raw: dict[str, Any] = {"aws": {"launch_batch_window_seconds": 0.2, "launch_batch_max": 5}}
        raw.update(overrides)
        self.settings: Settings = settings(cluster_name=cluster, **raw)
        self.store = Store.from_url(redis_url, cluster)
        self.ec2 = FakeEc2(cluster, launch_state="running")  # EC2 shows it at once: tagged at once
        self.agents = FakeAgents()
        self.agents.serving_default = False  # pods stay Booting: these tests are about launching
        self.kicked: list[str] = []
        self.limiter = RateLimiter(self.store, self.settings.rate_limits)
        self.lifecycle = Lifecycle(self.settings, self.store, self.ec2, self.agents, tokens=self.limiter)
        self.batches = BatchLaunch(
            self.settings,
            self.store,
            self.ec2,
            self.limiter,
            self.lifecycle.capacity,
            kick=self.kicked.extend,
        )
        self.lifecycle.batches = self.batches

    def add(self, n: int) -> list[str]:
        uids = [str(uuid.uuid4()) for _ in range(n)]
        for uid in uids:
            self.store.put_desired(pod(uid=uid), NODE)
        return uids

    def step(self, uid: str) -> float | None:
        with self.store.locked(uid, 10_000) as lock:
            rec = self.store.get(uid)
            assert rec is not None
            return self.lifecycle.create_step(lock, rec)

    def delete(self, uid: str) -> float | None:
        self.store.mark_deleted(uid, 0)
        with self.store.locked(uid, 10_000) as lock:
            rec = self.store.get(uid)
            assert rec is not None
            return self.lifecycle.delete(lock, rec)

    def rec(self, uid: str) -> PodRecord:
        rec = self.store.get(uid)
        assert rec is not None
        return rec

    def until_launched(self, uids: list[str], timeout: float = 10.0) -> None:
        """Step every pod without an instance until each has one (batch windows are short)."""
        deadline = time.monotonic() + timeout
        while (waiting := [u for u in uids if not self.rec(u).instance_id]) and time.monotonic() < deadline:
            for uid in waiting:
                self.step(uid)
            time.sleep(0.02)
        assert not waiting, f"{len(waiting)} pods got no instance"

    def runs(self) -> list[dict[str, Any]]:
        return self.ec2.calls_of("RunInstances")


@pytest.fixture
def world(redis_url: str) -> Iterator[Batched]:
    made = Batched(redis_url)
    yield made
    made.store.close()


def test_pods_in_one_window_share_runinstances_calls_and_each_gets_its_own_instance(world: Batched) -> None:
    uids = world.add(12)
    for uid in uids:
        world.step(uid)  # all join within the 0.2 s window: batches of 5, 5 and 2

    world.until_launched(uids)

    assert sorted(call["MaxCount"] for call in world.runs()) == [2, 5, 5]
    given = [world.rec(u).instance_id for u in uids]
    assert len(set(given)) == 12 == len(world.ec2.instances)
    for uid in uids:
        rec = world.rec(uid)
        assert rec.phase is Phase.BOOTING and rec.launch_token == batch_token(rec.launch_batch)
        tags = tag_map(world.ec2.instances[rec.instance_id])
        assert tags[TAG_LAUNCH_BATCH] == rec.launch_batch and tags[TAG_POD_UID] == uid  # pod tags written
    assert set(world.kicked) <= set(uids) and world.kicked  # the sender woke the other members


def test_a_batch_re_sent_after_its_sender_died_gets_the_same_instances(
    world: Batched, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = world.add(3)
    for uid in uids:
        world.step(uid)
    rec = world.rec(uids[0])
    time.sleep(0.25)  # the window is over
    # A sender claims the batch and launches, then dies before recording who gets what.
    claim = world.store.claim_batch(rec.launch_batch, "dead-sender", 60.0)
    assert claim.claimed and list(claim.members) == uids
    params = world.lifecycle.choice.params(rec.spec)
    tags = world.ec2.pod_tags(rec.spec, NODE)
    world.ec2.run_instances(params, world.batches._launch_tags(tags, rec.launch_batch), rec.launch_token, 3)
    assert world.step(uids[1]) == batchlaunch.SENDING_POLL_SECONDS  # its sender may still be alive
    monkeypatch.setattr(batchlaunch, "SENDER_SLACK_SECONDS", -1e6)  # ... until it has been silent too long

    world.until_launched(uids)

    assert len(world.runs()) == 2 and {c["ClientToken"] for c in world.runs()} == {rec.launch_token}
    assert len(world.ec2.instances) == 3  # EC2 answered the same token with the same instances
    assert len({world.rec(u).instance_id for u in uids}) == 3


def test_pods_ec2_launched_nothing_for_join_a_new_batch(world: Batched) -> None:
    world.ec2.launch_limit = 3  # EC2 launches 3 of the 5 asked (MinCount 1)
    uids = world.add(5)
    for uid in uids:
        world.step(uid)

    world.until_launched(uids)

    assert [c["MaxCount"] for c in world.runs()] == [5, 2]
    assert len({world.rec(u).instance_id for u in uids}) == 5 == len(world.ec2.instances)
    first = world.rec(uids[0]).launch_batch
    assert [world.rec(u).launch_batch == first for u in uids] == [True, True, True, False, False]


def test_a_deleted_member_leaves_an_open_batch_or_terminates_what_it_was_given(world: Batched) -> None:
    leaving, staying, late = world.add(3)
    world.step(leaving)
    world.step(staying)
    assert world.delete(leaving) is None  # left the open batch: deleted without an instance
    assert world.rec(leaving).phase is Phase.TERMINATED

    world.step(late)
    world.until_launched([staying])
    assert [c["MaxCount"] for c in world.runs()] == [2]  # the batch of staying and late

    assert world.delete(late) is None  # given an instance it never adopted: terminated
    gone = world.rec(late)
    assert gone.phase is Phase.TERMINATED
    assert gone.instance_id and world.ec2.instances[gone.instance_id]["State"]["Name"] in (
        "shutting-down",
        "terminated",
    )


def test_a_launch_without_tokens_comes_back_later_instead_of_waiting(redis_url: str) -> None:
    world = Batched(
        redis_url,
        rate_limits={"run_instances": {"rate": 0.5, "burst": 1}, "instances": {"rate": 2, "burst": 1000}},
        aws={"launch_batch_window_seconds": 0},  # one RunInstances per pod
    )
    first, second = world.add(2)
    world.step(first)
    started = time.monotonic()
    delay = world.step(second)
    assert time.monotonic() - started < 1.0  # did not sleep for the token
    assert delay is not None and 1.0 <= delay <= 2.1
    assert world.rec(second).phase is Phase.PENDING and len(world.runs()) == 1
    world.store.close()


def test_pod_tags_wait_for_free_tokens_and_count_as_owned_meanwhile(redis_url: str) -> None:
    world = Batched(redis_url, rate_limits={"mutating": {"rate": 0.01, "burst": 1}})
    uids = world.add(3)
    for uid in uids:
        world.step(uid)
    world.until_launched(uids)

    pending = world.store.pending_pod_tags()
    assert len(pending) == 2  # one mutating token: one pod's tags were written at once
    live = list(world.ec2.instances.values())
    assert not any(is_orphan(i, set(uids), {k: v.uid for k, v in pending.items()}) for i in live)
    assert all(is_orphan(i, set(uids)) for i in live if i["InstanceId"] in pending)

    report = PodTags(world.store, world.ec2, world.limiter).run()
    assert (report.written, report.pending) == (0, 2)  # no token yet: nothing waited for
    fast = settings(rate_limits={"mutating": {"rate": 1e6, "burst": 100}}).rate_limits
    assert PodTags(world.store, world.ec2, RateLimiter(world.store, fast)).run().written == 2
    assert all(tag_map(i).get(TAG_POD_UID) in uids for i in world.ec2.instances.values())
    world.store.close()


def test_a_refused_batch_goes_on_batched_in_the_next_subnet(redis_url: str) -> None:
    ec2 = {
        "image_id": "ami-0123456789abcdef0",
        "instance_type": "m5.large",
        "subnets": ["subnet-0a", "subnet-0b"],
    }
    world = Batched(redis_url, ec2=ec2)
    world.ec2.zones = {"subnet-0a": "us-west-2a", "subnet-0b": "us-west-2b"}
    world.ec2.no_capacity[("m5.large", "subnet-0a")] = "InsufficientInstanceCapacity"
    uids = world.add(4)
    for uid in uids:
        world.step(uid)

    world.until_launched(uids)

    calls = [(c["SubnetId"], c["MaxCount"]) for c in world.runs()]
    refused = sum(n for subnet, n in calls if subnet == "subnet-0a")
    launched = sum(n for subnet, n in calls if subnet == "subnet-0b")
    # Pods choosing 0a are refused as one batch and join 0b's next batch; all launch in 0b.
    assert refused <= 4 and launched == 4 and len(calls) <= 3, calls
    assert len({world.rec(u).instance_id for u in uids}) == 4 == len(world.ec2.instances)
    world.store.close()


def _throttle_once(world: Batched, monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint answers the next RunInstances with RequestLimitExceeded (it counts the call)."""
    real = world.ec2.run_instances

    def throttled(params: Any, tags: Any, token: str, count: int) -> list[dict[str, Any]]:
        monkeypatch.setattr(world.ec2, "run_instances", real)
        world.ec2.calls.append(("RunInstances", {"ClientToken": token, "MaxCount": count}))
        raise Ec2Error("RunInstances: RequestLimitExceeded", code="RequestLimitExceeded", retryable=True)

    monkeypatch.setattr(world.ec2, "run_instances", throttled)


@pytest.mark.parametrize("window", [0, 0.2], ids=["alone", "batched"])
def test_a_throttled_launch_reserves_its_tokens_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, window: float
) -> None:
    """A throttled RunInstances spent the tokens reserved for it: its retry waits for new ones."""
    world = Batched(
        redis_url,
        rate_limits={"run_instances": {"rate": 0.5, "burst": 1}, "instances": {"rate": 2, "burst": 1000}},
        aws={"launch_batch_window_seconds": window},
    )
    (uid,) = world.add(1)
    _throttle_once(world, monkeypatch)
    if window:
        countdown = world.step(uid)  # opens the batch's window
        assert countdown is not None
        time.sleep(countdown)  # the task's countdown: the next step sends the batch
    with pytest.raises(Ec2Error):
        world.step(uid)
    delay = world.step(uid)
    assert delay is not None and delay >= 1.0, delay  # the one token refills in 2 s
    assert len(world.runs()) == 1 and not world.rec(uid).instance_id
    world.store.close()
