"""A TLS fleet's bootstrap trust in the user data, and warm-pool members bootstrapped as they join.

Every launch (a pod's, a warm pool's) carries in its user data the fleet CA and the one-time secret
of its own ClientToken, so a re-sent RunInstances with the same token sends the same user data;
a warm-pool member is brought to mTLS before it is offered as Ready, with its own ClientToken.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.userdata import parse_trust
from tests.support.fakeagents import FakeAgents
from tests.support.fakes import FakeEc2
from tests.unit.fleet.world import World, settings
from vkec2.ca import FleetCA
from vkec2.contract import TAG_POOL, TAG_POOL_STATE
from vkec2.domain.agents import AgentTarget, AgentTrust
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase
from vkec2.domain.podspec import LaunchParams, user_data_for
from vkec2.errors import AgentBootstrapRefused
from vkec2.fleet.lifecycle import Lifecycle
from vkec2.fleet.warmpool import WarmPools
from vkec2.store.redis_store import Store

CA = FleetCA.create()


def trust(token: str) -> AgentTrust:
    return AgentTrust(CA.cert_pem.decode(), CA.bootstrap_secret(token))


class RecordingEc2(FakeEc2):
    """The EC2 fake, remembering the user data each ClientToken was sent with."""

    def __init__(self, cluster: str) -> None:
        super().__init__(cluster)
        self.user_data: dict[str, str | None] = {}

    def run_instance(self, params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        self.user_data.setdefault(token, params.user_data)
        assert self.user_data[token] == params.user_data, "same ClientToken, other user data"
        return super().run_instance(params, tags, token)


def test_the_secret_is_the_tokens_own_and_stable() -> None:
    cfg = settings()
    assert user_data_for(cfg, "m5.large", trust("t-1")) == user_data_for(cfg, "m5.large", trust("t-1"))
    assert CA.bootstrap_secret("t-1") != CA.bootstrap_secret("t-2")
    assert CA.bootstrap_secret("t-1") != FleetCA.create().bootstrap_secret("t-1")  # needs the CA key
    assert user_data_for(cfg, "m5.large") is None  # no TLS, no installer: no user data, as before


def test_a_pods_launch_carries_the_trust_of_its_client_token() -> None:
    world = World(settings())
    world.ec2 = RecordingEc2(world.settings.cluster_name)
    world.lifecycle = Lifecycle(world.settings, world.store, world.ec2, world.agents, trust=trust)
    world.seed(Phase.PENDING)
    world.step()
    token = world.rec.launch_token
    assert token and world.rec.phase is Phase.PROVISIONING
    assert parse_trust(world.ec2.user_data[token] or "") == (CA.cert_pem.decode(), CA.bootstrap_secret(token))


def pools_cfg(desired: int) -> dict[str, object]:
    return {"warm_pools": [{"name": "wp", "desired_count": desired}]}


def test_warm_pool_launches_carry_the_trust_of_their_tokens(store: Store) -> None:
    ec2 = RecordingEc2("unit")
    WarmPools(settings(**pools_cfg(2)), store, ec2, FakeAgents(), trust=trust).reconcile_all()
    assert len(ec2.user_data) == 2
    for token, data in ec2.user_data.items():
        assert parse_trust(data or "") == (CA.cert_pem.decode(), CA.bootstrap_secret(token))


def test_warm_pool_members_are_bootstrapped_when_they_join(store: Store) -> None:
    ec2 = FakeEc2("unit")
    good = ec2.add(tags={TAG_POOL: "wp", TAG_POOL_STATE: "Provisioning"}, client_token="tok-good")
    bad = ec2.add(tags={TAG_POOL: "wp", TAG_POOL_STATE: "Provisioning"}, client_token="tok-bad")
    seen: list[tuple[str, str]] = []

    def bootstrap(target: AgentTarget, token: str) -> None:
        seen.append((target.instance_id, token))
        if token == "tok-bad":
            raise AgentBootstrapRefused("the bootstrap proof does not match")

    pools = WarmPools(settings(**pools_cfg(2)), store, ec2, FakeAgents(), bootstrap=bootstrap, trust=trust)
    report = pools.reconcile_all()[0]
    assert sorted(seen) == sorted([(good["InstanceId"], "tok-good"), (bad["InstanceId"], "tok-bad")])
    assert report.ready == 1
    assert store.pool_ready("wp") == {good["InstanceId"]}  # the refused member is never offered


def test_the_agent_is_bootstrapped_with_its_instances_own_client_token() -> None:
    """The secret in an instance's user data is its own ClientToken's, also for a claimed pool member
    (whose token is the pool's, not the pod's launch intent)."""
    world = World(settings())
    seen: list[str] = []
    world.lifecycle.bootstrap = lambda target, token: seen.append(token)
    claimed = world.instance(client_token="pool-token-7")
    world.seed(Phase.BOOTING, instance=claimed, launch_token="")
    world.step()
    assert seen == ["pool-token-7"] and world.rec.phase is Phase.LAUNCHING
