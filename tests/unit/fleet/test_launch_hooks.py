"""The launch options where the fleet uses them: a Mac instance's boot timeout is its family's, for a
pod's boot (rows C9/C10 with a Mac) and for a warm-pool member alike, and a warm pool's launches
carry the pool's launch options (root volume, IMDSv2, a launch template's type left to it)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from tests.support.fakeagents import FakeAgents
from tests.support.fakes import FakeEc2
from tests.unit.fleet.world import BOOT_TIMEOUT, World, pod, settings
from vkec2.config.launchopts import MAC_BOOT_TIMEOUT_SECONDS
from vkec2.contract import TAG_POOL, TAG_POOL_STATE
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase
from vkec2.domain.podspec import LaunchParams
from vkec2.domain.times import rfc3339
from vkec2.fleet.warmpool import WarmPools
from vkec2.store.redis_store import Store

MAC_TIMEOUT = MAC_BOOT_TIMEOUT_SECONDS["mac2"]


def booting_mac(world: World, seconds_ago: float) -> str:
    inst = world.instance(instance_type="mac2.metal")
    world.seed(Phase.BOOTING, instance=inst, launched_at=time.time() - seconds_ago)
    world.agents.serving_default = False
    return str(inst["InstanceId"])


def test_a_mac_past_the_default_boot_timeout_is_still_booting(world: World) -> None:
    booting_mac(world, BOOT_TIMEOUT + 60)
    assert world.step() is not None
    assert world.rec.phase is Phase.BOOTING and world.ec2.terminated() == []


def test_a_mac_past_its_familys_boot_timeout_is_replaced(world: World) -> None:
    instance_id = booting_mac(world, MAC_TIMEOUT + 5)
    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "AgentBootTimeout", 1)
    assert f"within {MAC_TIMEOUT:.0f}s" in rec.message
    assert world.ec2.terminated() == [instance_id]


def test_a_silent_warm_pool_mac_gets_its_familys_boot_timeout(store: Store) -> None:
    ec2 = FakeEc2("unit")
    agents = FakeAgents()
    agents.serving_default = False
    launched = rfc3339(time.time() - BOOT_TIMEOUT - 60)
    tags = {TAG_POOL: "wp", TAG_POOL_STATE: "Provisioning"}
    linux = ec2.add(tags=tags, launch_time=launched)
    mac = ec2.add(tags=tags, launch_time=launched, instance_type="mac2.metal")
    cfg = settings(warm_pools=[{"name": "wp", "desired_count": 2}])
    report = WarmPools(cfg, store, ec2, agents).reconcile_all()[0]
    assert linux["InstanceId"] in report.terminated and mac["InstanceId"] not in report.terminated
    assert ec2.state(mac["InstanceId"]) == "running"


class RecordingEc2(FakeEc2):
    """The EC2 fake, remembering the parameters of every launch."""

    def __init__(self, cluster: str) -> None:
        super().__init__(cluster)
        self.sent: list[LaunchParams] = []

    def run_instance(self, params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        self.sent.append(params)
        return super().run_instance(params, tags, token)


def test_warm_pool_launches_carry_the_pools_launch_options(store: Store) -> None:
    ec2 = RecordingEc2("unit")
    cfg = settings(
        warm_pools=[
            {"name": "wp", "desired_count": 1, "root_volume": {"size_gib": 80}},
            {"name": "lt", "desired_count": 1, "launch_template": {"name": "base"}},
        ]
    )
    WarmPools(cfg, store, ec2, FakeAgents()).reconcile_all()
    own, templated = sorted(ec2.sent, key=lambda p: p.warm_pool or "", reverse=True)
    assert own.launch.root.size_gib == 80 and own.launch.http_tokens == "required"
    assert own.instance_type == "m5.large" and own.launch.template is None
    assert templated.launch.template is not None and templated.launch.template.name == "base"
    assert templated.instance_type == ""  # the template's type: the pool did not name one
    assert templated.image_id == cfg.ec2.image_id  # set in ec2: sent over the template's


def test_U1_a_pod_on_a_launch_templates_image_and_type_is_updated_in_place() -> None:
    world = World(settings(ec2={"launch_template": {"name": "base"}}))
    inst = world.instance(image_id="ami-0template00000000", instance_type="t3.micro")
    spec = pod(annotations={"compute.amazonaws.com/tags": '{"team": "b"}'})
    world.seed(Phase.RUNNING, instance=inst, spec=spec)
    world.update()
    assert (world.rec.phase, world.rec.reason) == (Phase.RUNNING, "Updated")  # not ReplacementNeeded
