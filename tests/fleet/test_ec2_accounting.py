"""The botocore hooks of vkec2.ec2.accounting on a real gateway: moto behind the counting proxy, real Redis.

Every call is counted once by action and outcome (Prometheus and Redis), every HTTP attempt draws a
rate-limit token and a throttled attempt is counted, a call the limiter refuses is never sent, and
the paginated listings read every page.
"""

from __future__ import annotations

import uuid
from typing import cast

import pytest

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import launch_params
from vkec2.config import Settings
from vkec2.domain.instances import client_token
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import Ec2Error
from vkec2.observability.metrics import REGISTRY
from vkec2.store.redis_store import Store


def calls(action: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("vkec2_ec2_calls_total", {"action": action, "outcome": outcome}) or 0.0


def counted(store: Store, key: str) -> dict[str, int]:
    raw = cast(dict[str, str], store.redis.hgetall(key))
    return {k: int(v) for k, v in raw.items()}


def make(
    ec2_proxy: Ec2Proxy, redis_url: str, tokens: list[str] | None = None, attempts: int = 1
) -> Ec2Gateway:
    settings = Settings.model_validate(
        {
            "cluster_name": f"acct-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": ec2_proxy.url, "max_attempts": attempts},
        }
    )
    store = Store.from_url(redis_url, settings.cluster_name)
    return Ec2Gateway(settings, store, limiter=None if tokens is None else tokens.append)


def launch(gateway: Ec2Gateway, uid: str) -> str:
    params = launch_params()
    pod = {"metadata": {"uid": uid, "name": uid, "namespace": "ci"}}
    return str(gateway.run_instance(params, gateway.pod_tags(pod, "n"), client_token(uid, 0))["InstanceId"])


def test_each_call_is_counted_once_and_draws_a_token(ec2_proxy: Ec2Proxy, redis_url: str) -> None:
    tokens: list[str] = []
    gateway = make(ec2_proxy, redis_url, tokens)
    assert gateway.store is not None
    ok_before = calls("RunInstances", "ok")
    instance_id = launch(gateway, "acct-1")
    gateway.describe([instance_id])
    gateway.terminate([instance_id])
    assert tokens == ["RunInstances", "DescribeInstances", "TerminateInstances"]
    assert calls("RunInstances", "ok") == ok_before + 1
    assert counted(gateway.store, gateway.store.keys.ec2_calls()) == {
        "RunInstances": 1,
        "DescribeInstances": 1,
        "TerminateInstances": 1,
    }
    assert counted(gateway.store, gateway.store.keys.ec2_throttles()) == {}


def test_throttled_attempts_draw_tokens_and_the_call_counts_once(ec2_proxy: Ec2Proxy, redis_url: str) -> None:
    tokens: list[str] = []
    gateway = make(ec2_proxy, redis_url, tokens, attempts=3)  # botocore: 3 attempts in all
    assert gateway.store is not None
    ec2_proxy.throttle_fraction = 1.0
    throttled_before = calls("DescribeInstances", "throttled")
    with pytest.raises(Ec2Error) as err:
        gateway.find_pod_instances("anything")
    assert err.value.code == "RequestLimitExceeded" and err.value.retryable
    assert ec2_proxy.throttled["DescribeInstances"] == 3 and tokens == ["DescribeInstances"] * 3
    assert counted(gateway.store, gateway.store.keys.ec2_throttled_attempts()) == {"DescribeInstances": 3}
    assert counted(gateway.store, gateway.store.keys.ec2_calls()) == {"DescribeInstances": 1}
    assert counted(gateway.store, gateway.store.keys.ec2_throttles()) == {"DescribeInstances": 1}
    assert calls("DescribeInstances", "throttled") == throttled_before + 1


def test_a_call_the_limiter_refuses_is_never_sent(ec2_proxy: Ec2Proxy, redis_url: str) -> None:
    def refuse(action: str) -> None:
        raise Ec2Error(f"{action}: refused", code="FleetRateLimited", retryable=True, reason="EC2Throttled")

    gateway = make(ec2_proxy, redis_url)
    gateway.limiter = refuse  # read when the client is created
    assert gateway.store is not None
    refused_before = calls("RunInstances", "rate_limited")
    errors_before = REGISTRY.get_sample_value("vkec2_ec2_launch_errors_total") or 0.0
    with pytest.raises(Ec2Error) as err:
        launch(gateway, "acct-refused")
    assert err.value.code == "FleetRateLimited" and err.value.reason == "EC2Throttled"
    assert ec2_proxy.calls["RunInstances"] == 0
    assert calls("RunInstances", "rate_limited") == refused_before + 1
    assert (REGISTRY.get_sample_value("vkec2_ec2_launch_errors_total") or 0.0) == errors_before
    assert counted(gateway.store, gateway.store.keys.ec2_calls()) == {}


def test_listings_read_every_page(ec2_proxy: Ec2Proxy, redis_url: str) -> None:
    gateway = make(ec2_proxy, redis_url)
    assert gateway.store is not None
    ids = {launch(gateway, f"acct-page-{i}") for i in range(7)}
    ec2_proxy.reset_counts()
    listed = gateway._describe_pages(
        Filters=[{"Name": "tag:vkec2.io/cluster", "Values": [gateway.settings.cluster_name]}],
        PaginationConfig={"PageSize": 5},
    )
    assert {i["InstanceId"] for i in listed} == ids
    assert ec2_proxy.calls["DescribeInstances"] == 2  # two pages, each a call
    assert counted(gateway.store, gateway.store.keys.ec2_calls())["DescribeInstances"] == 2
